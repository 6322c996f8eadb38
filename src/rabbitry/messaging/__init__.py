"""The messaging runtime: contracts, publishing, consuming."""
