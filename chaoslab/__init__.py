"""The local lab: a real control plane (Galera, RabbitMQ, docker + libvirt + qemu, sshd)
on loopback addresses of this machine, and its Kubernetes tier.

A package of its own beside the harness: it uses the harness (``chaos``) as a user
would — its errors, its wait, its service clients — and writes site inventories in the
harness's format; the harness never imports it (``chaos lab`` reaches it by name)."""
