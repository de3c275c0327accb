"""``ferry``: get, describe and create models, chat with them, and re-drive dead letters.

Cluster access follows kubectl: ``--kubeconfig`` or ``KUBECONFIG`` (else ``~/.kube/config``, else
in-cluster), ``--namespace``/``-n`` (else the context's namespace, else ``default``). The router is
``--router`` or ``FERRY_ROUTER_URL``; the bus is ``--nats`` or ``FERRY_NATS_URL``.

Commands import the Kubernetes and NATS clients only when they need them, so ``--help``, ``templates``
and ``chat`` start quickly.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
import yaml
from ferry_schemas import labels as L
from rich.console import Console, RenderableType
from rich.rule import Rule
from rich.table import Table

from ferry_cli.errors import CliError
from ferry_cli.templates import all_templates, find_template, parse_sets

app = typer.Typer(
    name="ferry",
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
dead_letters_app = typer.Typer(help="Messages a service gave up on: list them, re-drive them.")
app.add_typer(dead_letters_app, name="dead-letters")

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)


def print_wide(renderable: RenderableType) -> None:
    """As kubectl: rows as wide as their cells (a narrow terminal wraps them), never cut. The width
    is this renderable's alone: a pinned ``out.width`` would make later output wider than it asks
    (and ``out.print(width=)`` can only narrow)."""
    natural = out.measure(renderable, options=out.options.update_width(1000)).maximum
    terminal = out.width
    out.width = max(terminal, natural)
    try:
        out.print(renderable)
    finally:
        out.width = terminal


P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Options:
    kubeconfig: str | None
    namespace: str | None


KubeconfigOption = Annotated[
    str | None,
    typer.Option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)", show_default=False),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="namespace (default: the context's)", show_default=False),
]


def _options(ctx: typer.Context, kubeconfig: str | None, namespace: str | None) -> Options:
    """The cluster options, given before the command (``ferry -n NS get models``) or after it
    (``ferry get models -n NS``, as kubectl takes them); after wins."""
    options = ctx.find_object(Options)
    assert options is not None
    return Options(kubeconfig or options.kubeconfig, namespace or options.namespace)


def run(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command; a :class:`CliError` becomes ``error: …`` on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except CliError as exc:
            err.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def main_options(
    ctx: typer.Context,
    kubeconfig: KubeconfigOption = None,
    namespace: NamespaceOption = None,
) -> None:
    ctx.obj = Options(kubeconfig=kubeconfig, namespace=namespace)


class What(StrEnum):
    models = "models"
    servings = "servings"
    routes = "routes"


ALIASES = {
    "model": "models", "modelbooster": "models", "modelboosters": "models", "mb": "models",
    "serving": "servings", "modelserving": "servings", "modelservings": "servings", "ms": "servings",
    "route": "routes", "modelroute": "routes", "modelroutes": "routes", "mr": "routes",
}  # fmt: skip


def _what(value: str) -> What:
    try:
        return What(ALIASES.get(value.lower(), value.lower()))
    except ValueError:
        raise typer.BadParameter(f"{value!r}: expected models, servings or routes") from None


@app.command()
@run
async def get(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="models | servings | routes")],
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Tables of models (ModelBoosters), servings (ModelServings) or routes (ModelRoutes)."""
    from ferry_cli import kube, views

    kind = _what(what)
    opts = _options(ctx, kubeconfig, namespace)
    async with kube.connect(opts.kubeconfig, opts.namespace) as k:
        if kind is What.models:
            boosters = await k.objects(kube.BOOSTER)
            pods = await k.pods(L.BOOSTER_MODEL_NAME) if boosters else []
            table = views.models_table(boosters, pods)
            empty = not boosters
        elif kind is What.servings:
            servings = await k.objects(kube.SERVING)
            pods = await k.pods(L.MS_NAME) if servings else []
            servers = await k.objects(kube.SERVER) if servings else []
            table = views.servings_table(servings, pods, servers)
            empty = not servings
        else:
            routes = await k.objects(kube.ROUTE)
            table = views.routes_table(routes)
            empty = not routes
        if empty:
            err.print(f"No {kind.value} in namespace {k.namespace}.")
            return
        print_wide(table)


@app.command("describe")
@run
async def describe_cmd(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="model")],
    name: Annotated[str, typer.Argument(help="the ModelBooster's name")],
    traces: Annotated[
        Path | None,
        typer.Option(help="span file the services write (default: $FERRY_TRACE_FILE)", show_default=False),
    ] = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """A model: its children as a tree with conditions, endpoints, recent Events, last reconcile trace."""
    if _what(what) is not What.models:
        raise CliError("describe supports models (`ferry describe model NAME`)")
    from ferry_cli import describe, kube

    opts = _options(ctx, kubeconfig, namespace)
    trace_file = traces or (Path(p) if (p := os.environ.get("FERRY_TRACE_FILE")) else None)
    async with kube.connect(opts.kubeconfig, opts.namespace) as k:
        report = await describe.gather(k, name, trace_file)
    for title, body in report.sections():
        out.print(Rule(title, align="left", style="dim"))
        print_wide(body)


@app.command()
def templates() -> None:
    """The model templates `ferry create model --template` knows, with their parameters."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("TEMPLATE", no_wrap=True)  # the name to type: never cut
    table.add_column("DESCRIPTION", ratio=1, overflow="fold")
    table.add_column("PARAMETERS (default)", overflow="fold")
    for i, template in enumerate(all_templates()):
        params = "\n".join(f"{p.name}={p.default!s}" for p in template.parameters.values())
        if i:
            table.add_row()
        table.add_row(template.name, template.description, params)
    out.print(table)


@app.command()
@run
async def create(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="model")],
    template: Annotated[str, typer.Option("--template", "-t", help="template name (`ferry templates`)")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE, a template parameter (repeatable)")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="print the manifest; the API server validates it, stores nothing"),
    ] = False,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Create a ModelBooster from a template (`--dry-run`: print it after a server-side dry run)."""
    if _what(what) is not What.models:
        raise CliError("create supports models (`ferry create model --template NAME`)")
    from ferry_cli import kube

    manifest = find_template(template).render(parse_sets(set_ or []))
    opts = _options(ctx, kubeconfig, namespace)
    async with kube.connect(opts.kubeconfig, opts.namespace) as k:
        meta = manifest["metadata"]
        meta["namespace"] = meta.get("namespace") or k.namespace
        k.namespace = meta["namespace"]
        created = await k.create(manifest, dry_run=dry_run)
    if dry_run:
        out.print(yaml.safe_dump(manifest, sort_keys=False).rstrip(), markup=False)
        err.print(f"(dry run: the API server accepted {manifest['kind']} {meta['name']}; nothing stored)")
    else:
        out.print(
            f"modelbooster/{created['metadata']['name']} created in namespace {meta['namespace']}; "
            f"watch it with `ferry describe model {created['metadata']['name']} -n {meta['namespace']}`",
            soft_wrap=True,  # one line, so the command copies whole
        )


@app.command()
def chat(
    model: Annotated[str, typer.Argument(help="the model name (the ModelBooster's / ModelRoute's)")],
    prompt: Annotated[str | None, typer.Argument(help="the prompt (default: read stdin)")] = None,
    router: Annotated[
        str | None, typer.Option(help="router URL (default: $FERRY_ROUTER_URL)", show_default=False)
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="max tokens to generate")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="FERRY_API_KEY", help="bearer token")] = None,
) -> None:
    """Chat with a model through the router, printing the answer as it streams."""
    from ferry_cli.chat import stream_chat

    try:
        url = router or os.environ.get("FERRY_ROUTER_URL")
        if not url:
            raise CliError(
                "no router URL: pass --router or set FERRY_ROUTER_URL "
                "(in a cluster: `kubectl -n ferry-system port-forward svc/ferry-router 8080:80`, "
                "then http://127.0.0.1:8080)"
            )
        text = prompt if prompt is not None else sys.stdin.read()
        if not text.strip():
            raise CliError("empty prompt: pass PROMPT or pipe it on stdin")

        def show(delta: str) -> None:
            out.print(delta, end="", markup=False)
            out.file.flush()

        result = stream_chat(
            url, model, [{"role": "user", "content": text}], show, max_tokens=max_tokens, api_key=api_key
        )
        out.print()
        usage = result.usage
        err.print(
            f"[{result.model or model}: {result.chunks} chunks"
            + (f", {usage.get('prompt_tokens')} prompt + {usage.get('completion_tokens')} completion tokens]"
               if usage else "]"),
            markup=False,
        )  # fmt: skip
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
        raise typer.Exit(1) from None


NatsOption = Annotated[
    str | None, typer.Option("--nats", help="NATS URL (default: $FERRY_NATS_URL)", show_default=False)
]


@dead_letters_app.command("list")
@run
async def dead_letters_list(
    nats: NatsOption = None, limit: Annotated[int, typer.Option(help="newest N")] = 50
) -> None:
    """Dead letters, oldest first: sequence, service, consumer, subject, deliveries, error."""
    from ferry_cli import deadletters

    async with deadletters.connect(nats) as js:
        found = await deadletters.list_letters(js, limit)
    if not found:
        err.print("No dead letters.")
        return
    print_wide(deadletters.table(found))


@dead_letters_app.command("redrive")
@run
async def dead_letters_redrive(
    sequences: Annotated[list[int] | None, typer.Argument(help="DLQ sequences (from `list`)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="re-drive every dead letter")] = False,
    nats: NatsOption = None,
) -> None:
    """Put the current message of each dead letter's subject back on its stream, then drop the letter."""
    if not sequences and not all_:
        raise CliError("name the dead letters to re-drive (SEQ ...) or pass --all")
    from ferry_cli import deadletters

    async with deadletters.connect(nats) as js:
        for line in await deadletters.redrive_letters(js, sequences or [], every=all_):
            out.print(line, markup=False)
