"""``ferry`` / ``python -m ferry_cli``."""

from __future__ import annotations

from ferry_cli.app import app


def main() -> None:
    app(prog_name="ferry")


if __name__ == "__main__":
    main()
