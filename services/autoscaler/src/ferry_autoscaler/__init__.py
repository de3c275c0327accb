"""Ferry's autoscaler: acts on AutoscalingPolicy (and the v0.4.0/v0.1.0 Binding) like Kthena's."""
