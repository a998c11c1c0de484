"""Voice names per provider.

Flows may name an OpenAI voice (alloy, echo, fable, onyx, nova, shimmer), mapped to the Amazon
Polly voice the original plugin used for it, or a provider's own voice id.
"""

from __future__ import annotations

OPENAI_TO_POLLY = {
    "alloy": "Joanna", "echo": "Matthew", "fable": "Amy",
    "onyx": "Brian", "nova": "Salli", "shimmer": "Kimberly",
}  # fmt: skip

# Each provider: its default voice, the prefix it writes Polly voices with, and the voice
# families it accepts (a prefix, or an exact name).
PROVIDERS = {
    "twilio": ("Polly.Joanna", "Polly.", ("Polly.", "Google.", "man", "woman", "alice")),
    "plivo": ("Polly.Joanna", "Polly.", ("Polly.", "WOMAN", "MAN")),
    "telnyx": ("AWS.Polly.Joanna", "AWS.Polly.",
               ("AWS.Polly.", "Azure.", "ElevenLabs.", "Telnyx.", "female", "male")),
}  # fmt: skip


def provider_voice(provider: str, voice: str | None) -> tuple[str, bool]:
    """Maps a flow voice to the provider's voice id.

    Returns:
        The voice id, and whether the provider accepts it.
    """
    default, polly, families = PROVIDERS[provider]
    if voice is None:
        return default, True
    if voice in OPENAI_TO_POLLY:
        return polly + OPENAI_TO_POLLY[voice], True
    if voice.startswith("Polly.") and polly != "Polly.":
        voice = polly + voice.removeprefix("Polly.")
    return voice, any(voice == f or (f.endswith(".") and voice.startswith(f)) for f in families)
