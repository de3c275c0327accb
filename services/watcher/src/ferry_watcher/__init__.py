"""Lists and watches the Kubernetes API and publishes every object change on FERRY_OBJECTS."""
