"""The process and the machine: locks, liveness of processes, DDP ranks, stopping at safe points, the recorded
environment, secrets kept off screens and logs, progress bars. Knows no blipexp concept; imports no other layer,
and every layer may import it."""
