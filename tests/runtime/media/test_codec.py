"""The μ-law codec against CPython's audioop on every input.

Where ``audioop`` exists (3.11, 3.12) the codec is compared with it on all 65,536 samples and
all 256 codes, and the checked-in table of audioop's outputs is checked against it too; where it
is gone (3.13+) the same full comparison runs against that table. Neither branch skips.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voicecall.runtime.media import codec

FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).parent / "audioop_ulaw.json").read_text("utf-8")
)
ALL_PCM = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def audioop_outputs() -> tuple[bytes, bytes]:
    """audioop's encoding of every sample and decoding of every code, from wherever it lives."""
    if importlib.util.find_spec("audioop") is not None:  # stdlib up to 3.12, or audioop-lts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            audioop = importlib.import_module("audioop")
        return audioop.lin2ulaw(ALL_PCM, 2), audioop.ulaw2lin(ALL_CODES, 2)
    assert sys.version_info >= (3, 13), "audioop is in the standard library before 3.13"
    decoded = np.array(FIXTURE["ulaw2lin_all_codes"], dtype="<i2").tobytes()
    return _encoded_from_fixture(), decoded


def _encoded_from_fixture() -> bytes:
    """The full 64 Ki table is stored as a hash; the codec's table must match it exactly."""
    ours = codec.encode(ALL_PCM)
    assert hashlib.sha256(ours).hexdigest() == FIXTURE["lin2ulaw_all_inputs_sha256"]
    return ours


def test_encode_matches_audioop_on_every_sample() -> None:
    expected, _ = audioop_outputs()
    ours = codec.encode(ALL_PCM)
    differing = np.flatnonzero(np.frombuffer(ours, np.uint8) != np.frombuffer(expected, np.uint8))
    assert differing.size == 0, f"{differing.size} samples differ, first {differing[:5] - 32768}"


def test_decode_matches_audioop_on_every_code() -> None:
    _, expected = audioop_outputs()
    assert codec.decode(ALL_CODES) == expected


def test_fixture_holds_audioops_outputs() -> None:
    expected_enc, expected_dec = audioop_outputs()
    assert hashlib.sha256(expected_enc).hexdigest() == FIXTURE["lin2ulaw_all_inputs_sha256"]
    assert np.frombuffer(expected_dec, "<i2").tolist() == FIXTURE["ulaw2lin_all_codes"]
    for sample, code in FIXTURE["lin2ulaw_spots"]:
        assert expected_enc[sample + 32768] == code


@pytest.mark.parametrize(("sample", "code"), [tuple(s) for s in FIXTURE["lin2ulaw_spots"]])
def test_spot_values_including_segment_edges(sample: int, code: int) -> None:
    assert codec.encode(np.array([sample], "<i2").tobytes()) == bytes([code])


def test_silence_byte_decodes_to_zero_and_round_trip_is_stable() -> None:
    assert codec.decode(bytes([codec.SILENCE_BYTE])) == b"\x00\x00"
    # Decoding then re-encoding any code gives the same code (0x7F and 0xFF both mean zero).
    again = codec.encode(codec.decode(ALL_CODES))
    changed = {c for c, d in zip(ALL_CODES, again, strict=True) if c != d}
    assert changed == {0x7F}


def test_array_forms_agree_with_bytes_forms() -> None:
    samples = np.frombuffer(ALL_PCM, "<i2").astype(np.int16)
    assert codec.encode_array(samples).tobytes() == codec.encode(ALL_PCM)
    codes = np.arange(256, dtype=np.uint8)
    assert codec.decode_array(codes).astype("<i2").tobytes() == codec.decode(ALL_CODES)


def test_odd_length_pcm_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        codec.encode(b"\x00\x01\x02")
