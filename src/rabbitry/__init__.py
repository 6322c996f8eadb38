"""rabbitry: RabbitMQ topology-as-code and message contracts."""

from rabbitry.errors import RabbitryError, RoutingError, SpecError, UsageError

__all__ = ["RabbitryError", "RoutingError", "SpecError", "UsageError", "__version__"]

__version__ = "0.1.0"
