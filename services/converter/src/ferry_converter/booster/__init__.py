"""ModelBooster → ModelServing, ModelServer, ModelRoute, AutoscalingPolicy and Binding."""
