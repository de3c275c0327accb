"""The routing table and how it is fed from the bus."""
