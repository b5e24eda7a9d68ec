"""What every stage may rely on about this machine: its CPU, the disk cache, start-up progress."""
