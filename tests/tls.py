"""A RabbitMQ node that speaks TLS, with a certificate authority the test made.

``tests/nodes.py``'s ``OwnNode`` (its own ports, folder and Erlang cookie)
plus a TLS AMQP listener and a TLS management listener, each on a free port
of its own.  The plain listeners stay: the node's start-up check and the
fresh-vhost helpers use them, and a test compares the two.

The certificates come from ``trustme`` (a test CA made in memory, written to
the node's folder as PEM files), so no test depends on the machine's trust
store or on a certificate that expires in some year:

- ``ca``: the CA that signed the node's certificate, and the client's;
- ``other_ca``: a CA the node has never heard of (the "wrong CA" cases);
- the node's certificate names ``127.0.0.1`` only (an IP address SAN), so
  ``amqps://127.0.0.1:PORT`` verifies and ``amqps://localhost:PORT`` is a
  certificate for another name (``localhost`` resolves to 127.0.0.1 too);
- ``client``: a client certificate whose common name is ``CLIENT_USER``, a
  user the node has (no password): with ``ssl_cert_login_from = common_name``
  and the EXTERNAL mechanism, that certificate is the login.

The broker side is what an operator writes (README, "TLS"): the
``rabbitmq_auth_mechanism_ssl`` plugin, ``auth_mechanisms.3 = EXTERNAL``,
``ssl_options.verify = verify_peer`` and ``fail_if_no_peer_cert`` (``False`` by
default here: clients without a certificate log in with a password; ``True``
for the node of the EXTERNAL-only test).  ``external=False`` leaves EXTERNAL
out, for the case of a broker that does not offer it.
"""

from __future__ import annotations

import contextlib
import datetime
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import trustme

from nodes import CREDENTIALS, OwnNode, _free_port

__all__ = ["CLIENT_USER", "Certificates", "TLSNode", "make_certificates", "started_tls_node"]

#: The client certificate's common name: the user EXTERNAL logs in as.
CLIENT_USER = "rabbitry-client"
#: The name and address the node's certificate is for.
NODE_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Certificates:
    """PEM files in one folder: two CAs, the node's certificate and key, a client's."""

    ca: Path
    other_ca: Path
    node_cert: Path
    node_key: Path
    client_cert: Path
    client_key: Path
    #: The client's key and certificate in one file (``certfile`` alone, no ``keyfile``).
    client_combined: Path


def make_certificates(
    folder: Path, *, ca: trustme.CA | None = None, node_expired: bool = False
) -> Certificates:
    """A CA (``ca`` or a fresh one), a certificate for ``NODE_HOST`` and one for
    ``CLIENT_USER``, and another CA, as PEM files in ``folder``.

    ``node_expired``: the node's certificate expired yesterday (valid the month before).
    """
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = ca or trustme.CA(), trustme.CA()
    if node_expired:
        now = datetime.datetime.now(datetime.UTC)
        node = ca.issue_cert(
            NODE_HOST,
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
    else:
        node = ca.issue_cert(NODE_HOST)
    client = ca.issue_cert(CLIENT_USER, common_name=CLIENT_USER)
    paths = Certificates(
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        node_cert=folder / "node.pem",
        node_key=folder / "node.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        client_combined=folder / "client-combined.pem",
    )
    ca.cert_pem.write_to_path(str(paths.ca))
    other.cert_pem.write_to_path(str(paths.other_ca))
    node.private_key_pem.write_to_path(str(paths.node_key))
    for i, pem in enumerate(node.cert_chain_pems):
        pem.write_to_path(str(paths.node_cert), append=i > 0)
    client.private_key_pem.write_to_path(str(paths.client_key))
    for i, pem in enumerate(client.cert_chain_pems):
        pem.write_to_path(str(paths.client_cert), append=i > 0)
    client.private_key_and_cert_chain_pem.write_to_path(str(paths.client_combined))
    return paths


class TLSNode(OwnNode):
    """An ``OwnNode`` with TLS listeners for AMQP and the management API, and EXTERNAL."""

    def __init__(
        self,
        folder: Path,
        *,
        fail_if_no_peer_cert: bool = False,
        node_expired: bool = False,
        external: bool = True,
    ) -> None:
        super().__init__(folder)
        taken = {self.amqp_port, self.management_port, self.dist_port}
        self.amqps_port = _free_port(taken)
        self.https_port = _free_port(taken)
        self._ca = trustme.CA()
        self.certs = make_certificates(folder / "certs", ca=self._ca, node_expired=node_expired)
        c = self.certs
        ssl = (
            f"cacertfile = {c.ca}\ncertfile = {c.node_cert}\nkeyfile = {c.node_key}\n"
        ).splitlines()
        with (folder / "rabbitmq.conf").open("a") as conf:
            conf.write(
                f"listeners.ssl.default = {NODE_HOST}:{self.amqps_port}\n"
                + "".join(f"ssl_options.{line}\n" for line in ssl)
                + "ssl_options.verify = verify_peer\n"
                f"ssl_options.fail_if_no_peer_cert = {str(fail_if_no_peer_cert).lower()}\n"
                f"management.ssl.ip = {NODE_HOST}\n"
                f"management.ssl.port = {self.https_port}\n"
                + "".join(f"management.ssl.{line}\n" for line in ssl)
                + "auth_mechanisms.1 = PLAIN\n"
                "auth_mechanisms.2 = AMQPLAIN\n"
                + ("auth_mechanisms.3 = EXTERNAL\nssl_cert_login_from = common_name\n" * external)
            )
        plugins = (
            "rabbitmq_management,rabbitmq_auth_mechanism_ssl" if external else "rabbitmq_management"
        )
        (folder / "enabled_plugins").write_text(f"[{plugins}].\n")

    def amqps_url(
        self, vhost: str = "/", *, host: str = NODE_HOST, login: bool = True, **options: str
    ) -> str:
        """``amqps://`` to the TLS listener; ``options`` become the query (``cafile=...``)."""
        user, password = CREDENTIALS
        auth = f"{user}:{password}@" if login else ""
        query = f"?{urlencode(options)}" if options else ""
        return f"amqps://{auth}{host}:{self.amqps_port}/{quote(vhost, safe='')}{query}"

    @property
    def https_url(self) -> str:
        return f"https://{NODE_HOST}:{self.https_port}"

    def client_certificate(self, common_name: str) -> Path:
        """A client certificate (key included) from the node's CA for ``common_name``."""
        path = self.folder / "certs" / f"client-{common_name}.pem"
        cert = self._ca.issue_cert(common_name, common_name=common_name)
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
        return path

    def add_certificate_user(self) -> None:
        """The user the client certificate's CN names: no password, rights on ``/``."""
        for args in (
            ("add_user", CLIENT_USER, "unused-password"),
            ("clear_password", CLIENT_USER),
            ("set_permissions", "-p", "/", CLIENT_USER, ".*", ".*", ".*"),
        ):
            done = self.ctl(*args)
            if done.returncode != 0 and "already exists" not in done.stderr:
                raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")


@contextlib.contextmanager
def started_tls_node(**settings: bool) -> Iterator[TLSNode]:
    """A started ``TLSNode`` in a temporary folder; killed and removed on the way out."""
    with tempfile.TemporaryDirectory(prefix="rabbitry-node-") as folder:
        node = TLSNode(Path(folder), **settings)
        try:
            node.start()
            yield node
        finally:
            node.kill()
