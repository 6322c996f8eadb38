"""The broker side: reading a vhost's live state, planning and applying changes."""
