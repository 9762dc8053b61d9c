"""The local lab: a real control plane (Galera, RabbitMQ, docker + libvirt + qemu, sshd)
on loopback addresses of this machine."""
