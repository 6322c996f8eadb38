"""``rabbitry route`` imports the spec reader and routing, not the broker layer nor
``rabbitry.compat``: at 20,000 queues every tenth of a second counts toward its 2 s."""

from __future__ import annotations

import json
import subprocess
import sys

#: Packages a lookup never needs: the broker clients, the terminal renderer, check --against.
NOT_NEEDED = ("aiormq", "httpx", "rich", "rabbitry.compat", "rabbitry.broker.amqp")


def test_the_route_command_imports_no_broker_layer() -> None:
    code = (
        "import json, sys\n"
        "from rabbitry.cli import cli\n"
        "cli.get_command(None, 'route')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    assert [m for m in loaded if any(m == n or m.startswith(f"{n}.") for n in NOT_NEEDED)] == []
    assert "rabbitry.routing" in loaded
