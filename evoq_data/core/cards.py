"""Rendering the card templates of cards/ (the dataset card and the model card).

One renderer for both: jinja2 over ``cards/<name>``. ``strict`` (the model card) fails on a
name the template uses but the caller did not give; the dataset card reads optional fields
of earlier manifests (absent ones render empty), as the Hub's card templates do.
"""

from __future__ import annotations

from evoq_data.core.resources import card_path


def render_template(name: str, *, strict: bool = True, **context) -> str:
    """``cards/<name>`` rendered with ``context`` (the text keeps its trailing newline)."""
    import jinja2

    undefined = jinja2.StrictUndefined if strict else jinja2.Undefined
    template = jinja2.Template(card_path(name).read_text(encoding="utf-8"),
                               undefined=undefined, keep_trailing_newline=True)
    return template.render(**context)


def render_model_card(lineage: dict) -> str:
    """README.md of a trained model: cards/model_card.md.j2 over its lineage record."""
    return render_template("model_card.md.j2", **lineage)
