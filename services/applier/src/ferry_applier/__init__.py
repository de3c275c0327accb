"""Makes the cluster match the desired sets: server-side apply, pods, rolling update, recovery, prune."""
