"""ModelServing → desired workload (a ServingGroup blueprint and the replica count)."""
