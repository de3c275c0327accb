"""Gateway mode: Ferry's Gateway API controller (status of GatewayClasses, Gateways, HTTPRoutes and
InferencePools; the default GatewayClass and Gateway)."""
