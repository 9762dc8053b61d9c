"""Each service's client code: how the harness asks Galera, RabbitMQ and libvirt about
themselves, with typed answers. Probes, recovery procedures and the lab all use these;
nothing here knows where a service runs."""
