"""Our own audit trail (trail.py) and the spool its records wait in while another process holds
the local bus (spool.py): an event source of the core, used by the commands, the scheduler and
the detection stage."""
