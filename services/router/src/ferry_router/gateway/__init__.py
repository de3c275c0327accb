"""Gateway mode: Gateway listeners, ModelRoutes bound by parentRefs, HTTPRoutes to InferencePools."""
