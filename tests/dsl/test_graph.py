"""The node graph as Mermaid and dot text."""

from __future__ import annotations

import re

from voicecall.dsl.graph import mermaid_text, to_mermaid
from voicecall.dsl.validate import validate_text

FLOW = """\
version: 1
name: menu
description: A branch on a filtered answer.
start: ask
nodes:
  ask:
    - ask: {prompt: Yes or no?, input: speech, save_as: reply}
    - branch:
        - when: "reply.text | lower == 'yes' and '#' not in reply.text"
          goto: done
        - else: done
  done: [hangup]
"""


def test_mermaid_labels_escape_special_characters_as_entity_codes() -> None:
    result = validate_text(FLOW, "menu.yaml")
    assert result.flow is not None
    text = to_mermaid(result.flow)
    (edge,) = [line for line in text.splitlines() if "lower" in line]
    label = re.fullmatch(r'  n0 -->\|"(.*)"\| n1', edge)
    assert label is not None, edge
    assert "|" not in label.group(1) and '"' not in label.group(1)
    assert "reply.text #124; lower == 'yes' and '#35;' not in reply.text" in label.group(1)


def test_mermaid_text_codes() -> None:
    assert mermaid_text('a|b "c" #1 <x> & `y`') == (
        "a#124;b #quot;c#quot; #35;1 #lt;x#gt; #amp; #96;y#96;"
    )
