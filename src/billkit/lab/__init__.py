"""The local lab: systemd-nspawn hosts on one bridge per tier, hardened by Ansible, checked by testinfra.

Modules: ``state`` (``.lab/`` and what the lab changed), ``base`` (the debootstrapped image),
``net`` (bridges, sysctl, nftables from the topology), ``helpers`` (apt proxy, published port),
``hosts`` (overlay disks, nspawn), ``inventory`` (the generated Ansible inventory), ``ansible``
(running playbooks), ``pipeline`` (up/down/status), ``verify`` (testinfra and Lynis).
"""
