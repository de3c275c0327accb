"""ModelRoute matching (spec §5.2): model name or LoRA name, rules in order, weighted targets.

Routes for a name are tried oldest first; in a route the first rule whose ``modelMatch`` passes
is used; a target is drawn at random with probability weight/total. A rule whose targets cannot
be drawn (all weights 0) falls through to the next rule (Kthena skips the whole route).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ferry_router.state.resources import Route, Rule, Target
from ferry_router.state.table import RoutingTable


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    rule: Rule
    target: Target
    is_lora: bool

    @property
    def namespace(self) -> str:
        return self.route.namespace

    @property
    def server_key(self) -> str:
        return f"{self.route.namespace}/{self.target.server}"


def pick_target(rule: Rule, rng: random.Random | None = None) -> Target | None:
    """Weighted random choice; ``None`` when every weight is 0."""
    if rule.total_weight <= 0:
        return None
    if len(rule.targets) == 1:
        return rule.targets[0]
    draw = (rng or random).randrange(rule.total_weight)
    for target in rule.targets:
        draw -= target.weight
        if draw < 0:
            return target
    return None  # unreachable: draw < total


def match_route(
    table: RoutingTable,
    model: str,
    path: str,
    headers: Mapping[str, str],
    rng: random.Random | None = None,
    allowed: Callable[[Route], bool] | None = None,
) -> Match | None:
    """The target for a request, or ``None`` when no route matches.

    ``headers`` must answer lower-case names (aiohttp's ``CIMultiDict`` does). ``allowed`` limits
    the candidates (gateway mode: the routes bound to the listener the request came in on).
    """
    candidates = table.by_model.get(model)
    is_lora = False
    if candidates is None:
        candidates = table.by_lora.get(model)
        is_lora = True
        if candidates is None:
            return None
    for route in candidates:
        if allowed is not None and not allowed(route):
            continue
        for rule in route.rules:
            if not rule.matches(model, path, headers):
                continue
            target = pick_target(rule, rng)
            if target is not None:
                return Match(route=route, rule=rule, target=target, is_lora=is_lora)
    return None


def fallback_order(rule: Rule, chosen: Target, rng: random.Random | None = None) -> list[Target]:
    """The rule's other targets with weight > 0, in a weighted random order (without replacement):
    where a request goes when ``chosen`` cannot serve it."""
    draw = (rng or random).random
    others = [t for t in rule.targets if t is not chosen and t.weight > 0]
    return sorted(others, key=lambda t: draw() ** (1.0 / t.weight), reverse=True)
