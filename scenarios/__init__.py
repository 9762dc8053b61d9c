"""The scenario suite users run against a site: one module per failure family (Galera,
RabbitMQ, compute, controller). A package, shipped in the wheel, so ``chaos run`` finds
it wherever the harness is installed."""
