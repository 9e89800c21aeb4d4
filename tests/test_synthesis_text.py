"""Tag parser, emotion mapping, crossfade joining and the frame cap (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_tts_ext.constants import FRAME_RATE
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.synthesis.bounds import expected_seconds, frame_cap
from qwen_tts_ext.synthesis.emotions import DEFAULT_EMOTIONS_PATH, EmotionMap, load_emotions
from qwen_tts_ext.synthesis.joining import Joiner, crossfade_join, join_overlaps, joined_length
from qwen_tts_ext.synthesis.tags import TagSyntaxError, parse_script
from _synthesis_helpers import max_jump

# ----------------------------------------------------------------------------- tags


def test_tags_split_the_script_at_every_tag():
    script = "[Whispering] Don't wake him. [Angry] Why would you do that? [Excited] We won!"
    segs = parse_script(script)
    assert [(s.tag, s.text) for s in segs] == [
        ("Whispering", "Don't wake him."),
        ("Angry", "Why would you do that?"),
        ("Excited", "We won!"),
    ]
    assert [s.column for s in segs] == [1, script.index("[Angry]") + 1, script.index("[Excited]") + 1] == [1, 30, 61]


def test_text_without_tags_is_one_untagged_segment():
    segs = parse_script("  Hello   there,\n  general Kenobi.  ")
    assert len(segs) == 1
    assert segs[0].tag is None and segs[0].text == "Hello there, general Kenobi."
    assert segs[0].column == 3


def test_text_before_the_first_tag_is_untagged():
    segs = parse_script("Well. [Sad] It is over.")
    assert [(s.tag, s.text) for s in segs] == [(None, "Well."), ("Sad", "It is over.")]


def test_escaped_brackets_are_literal_text():
    segs = parse_script(r"[Calm] Press \[enter\] now.")
    assert [(s.tag, s.text) for s in segs] == [("Calm", "Press [enter] now.")]


def test_tag_names_are_whitespace_normalised():
    assert parse_script("[  very   happy ] yes")[0].tag == "very happy"


@pytest.mark.parametrize(
    "script, fragment",
    [
        ("[Angry [Sad] x] text", "nested '[' at column 8"),
        ("[Angry text", "unbalanced '[' at column 1"),
        ("hello] there", "unbalanced ']' at column 6"),
        ("[Happy] ok [Sad", "unbalanced '['"),
        ("[] hello", "empty tag"),
        ("[   ] hello", "empty tag"),
        ("[Happy] hi [Sad]", "tag [Sad] at column 12 has no text after it (at the end"),
        ("[Happy] [Sad] hi", "tag [Happy] at column 1 has no text after it (directly before the tag at column 9"),
        ("", "the script is empty"),
        ("   \n\t ", "the script is empty"),
    ],
)
def test_malformed_scripts_raise_a_user_error_naming_the_problem(script, fragment):
    with pytest.raises(TagSyntaxError) as err:
        parse_script(script)
    assert fragment in str(err.value)
    assert isinstance(err.value, UserError)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- emotions


def test_default_emotions_file_maps_the_documented_tags():
    emo = load_emotions()
    assert emo.source == str(DEFAULT_EMOTIONS_PATH)
    for tag in ("whispering", "angry", "excited", "happy", "sad"):
        assert tag in emo.tags
    whisper = emo.resolve("Whispering")
    assert whisper.known and "whisper" in whisper.text.lower()
    # case, spaces, dashes and underscores are ignored; aliases resolve to their target
    assert emo.resolve("WHISPER").text == whisper.text
    assert emo.resolve("whis-per_ing").text == whisper.text
    assert emo.resolve(None).text == "" and emo.resolve(None).known


def test_unknown_tag_is_a_free_text_instruction_marked_unknown():
    ins = load_emotions().resolve("speaking slowly, with a smile")
    assert ins.text == "speaking slowly, with a smile"
    assert not ins.known


def test_custom_emotions_file(tmp_path):
    f = tmp_path / "emo.yaml"
    f.write_text("default: Speak normally.\nemotions:\n  Grumpy: Speak grumpily.\naliases:\n  cross: grumpy\n")
    emo = load_emotions(f)
    assert emo.resolve("grumpy").text == "Speak grumpily."
    assert emo.resolve("Cross").text == "Speak grumpily."
    assert emo.resolve(None).text == "Speak normally."


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("emotions:\n  a: b\nsynonyms: {}\n", "unknown key"),
        ("emotions:\n  a: b\naliases:\n  x: missing\n", "alias 'x' points to 'missing'"),
        ("emotions: [a, b]\n", "must map tag names"),
        ("emotions: {a: [1]}\n", "must map tag names"),
        ("- a\n", "must hold a mapping"),
        ("emotions: {a: b\n", "not valid YAML"),
    ],
)
def test_bad_emotions_files_are_user_errors(tmp_path, content, fragment):
    f = tmp_path / "emo.yaml"
    f.write_text(content)
    with pytest.raises(UserError, match=fragment):
        load_emotions(f)


def test_missing_emotions_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_emotions(tmp_path / "nope.yaml")


def test_empty_map_treats_every_tag_as_free_text():
    assert EmotionMap().resolve("Angry").known is False


# ----------------------------------------------------------------------------- joining


@pytest.mark.parametrize(
    "lengths, crossfade",
    [([1000, 2000, 1500], 240), ([1000], 240), ([100, 50, 3000], 240), ([10, 10], 0), ([4800, 4800, 4800, 4800], 960)],
)
def test_joined_length_is_sum_minus_crossfades(lengths, crossfade):
    rng = np.random.default_rng(0)
    segs = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in lengths]
    out = crossfade_join(segs, crossfade)
    overlaps = join_overlaps(lengths, crossfade)
    assert len(out) == sum(lengths) - sum(overlaps) == joined_length(lengths, crossfade)
    assert all(o <= crossfade for o in overlaps)
    if lengths == [100, 50, 3000]:
        assert overlaps == [25, 25]  # clipped to half of the short middle segment
    elif len(lengths) > 1:
        assert overlaps == [crossfade] * (len(lengths) - 1)
    # outside the crossfades the audio is untouched
    k = overlaps[0] if overlaps else 0
    np.testing.assert_array_equal(out[: lengths[0] - k], segs[0][: lengths[0] - k])
    np.testing.assert_array_equal(out[len(out) - (lengths[-1] - (overlaps[-1] if overlaps else 0)):],
                                  segs[-1][(overlaps[-1] if overlaps else 0):])


def test_crossfade_has_no_click_between_discontinuous_segments():
    """DC +0.5 then DC -0.5: butt-joined that is a 1.0 jump; crossfaded it must be tiny."""
    a = np.full(4800, 0.5, dtype=np.float32)
    b = np.full(4800, -0.5, dtype=np.float32)
    assert max_jump(np.concatenate([a, b])) == pytest.approx(1.0)
    k = 960
    out = crossfade_join([a, b, a], k)
    # sin/cos fade: slope <= pi/2 per crossfade length, times the 1.0 step between the levels
    assert max_jump(out) <= np.pi / (2 * k) * 1.0 + 1e-6


def test_crossfade_jump_at_joins_is_bounded_by_the_signals_own_slope():
    sr, k = 24000, 960
    t = np.arange(sr) / sr
    a = (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    b = (0.4 * np.sin(2 * np.pi * 330 * t + 1.3)).astype(np.float32)
    out = crossfade_join([a, b], k)
    own = max(max_jump(a), max_jump(b))
    join_region = out[len(a) - k - 1 : len(a) + 1]
    # |d(fade_out*a + fade_in*b)| <= sqrt(2) * own slope + fade slope * (|a| + |b|)
    assert max_jump(join_region) <= np.sqrt(2) * own + (np.pi / (2 * k)) * 0.8 + 1e-6


def test_incremental_joiner_matches_one_shot_join():
    rng = np.random.default_rng(1)
    segs = [rng.standard_normal(n).astype(np.float32) for n in (3000, 700, 5000, 2500)]
    j = Joiner(480)
    for i, s in enumerate(segs):
        j.add(s)
        np.testing.assert_allclose(j.audio, crossfade_join(segs[: i + 1], 480))
        assert len(j) == len(j.audio)


# ----------------------------------------------------------------------------- bounds


def test_frame_cap_grows_with_text_and_covers_slow_speech():
    short, long = "We won!", "We won! " * 20
    assert frame_cap(long) > frame_cap(short)
    # a natural reading (about 15 letters/s) fits well inside the cap
    for text in (short, long, "Why would you do that?"):
        letters = sum(c.isalpha() for c in text)
        assert frame_cap(text) > (letters / 15.0) * FRAME_RATE * 1.5


def test_frame_cap_prevents_runaways():
    """The Darwin 10% failure: 655 s for one sentence. The cap keeps one sentence to seconds."""
    cap = frame_cap("Why would you do that?")
    assert cap / FRAME_RATE < 15
    assert frame_cap("word " * 10_000) / FRAME_RATE <= 120  # hard ceiling per segment
    assert frame_cap("word " * 10_000, max_seconds=30) == int(30 * FRAME_RATE)


def test_expected_seconds_counts_cjk_slower_than_letters():
    assert expected_seconds("你好世界") > expected_seconds("abcd")
    assert expected_seconds("1999") == pytest.approx(1.0)
    assert expected_seconds("a, b.") == pytest.approx(2 / 12 + 0.6)
    assert frame_cap("") >= int(FRAME_RATE)


def test_frame_cap_rejects_nonsense_parameters():
    with pytest.raises(ValueError):
        frame_cap("x", margin=0)
