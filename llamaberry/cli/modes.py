"""`llamaberry modes`: the modes, what each does, and their options."""

from __future__ import annotations

import json
from typing import Any

import click


@click.command("modes")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of prose.")
def modes_command(as_json: bool) -> None:
    """List the modes, what each does, and its options with their ranges and defaults."""
    from llamaberry import modes
    from llamaberry.core import options

    listed: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "description": spec.description,
            "default": spec.default,
            "options": {
                name: {
                    "description": field.description,
                    "accepts": options.describe(field),
                    "default": field.default,
                    "env": options.env_name(name),
                }
                for name, field in spec.options.model_fields.items()
            },
        }
        for spec in modes.MODES.values()
    ]
    if as_json:
        click.echo(json.dumps(listed, ensure_ascii=False))
        return
    for entry in listed:
        click.echo(f"{entry['name']}: {entry['description']}")
        for name, about in entry["options"].items():
            click.echo(
                f"  --{name.replace('_', '-')}: {about['description']} {about['accepts']}, "
                f"default {about['default']} (env {about['env']})"
            )
