"""Chat templates: input_ids equal HF apply_chat_template (+ the HF processors' token expansion)
with the same template written in jinja here; labels exactly where its {% generation %} mask is."""
import numpy as np
import pytest
from transformers import (
    CLIPImageProcessor,
    GotOcr2ImageProcessor,
    InternVLProcessor,
    LlavaProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)

from msmm.data.image_processing import IMAGENET_MEAN, IMAGENET_STD, CLIPImageTransform, InternVLImageTransform, Qwen2VLImageTransform
from msmm.data.records import Message
from msmm.data.templates import IGNORE_INDEX, TEMPLATES, ConversationEncoder, PlaceholderError

from test_image_processing import _image
from tokenizers_for_tests import qwen2_tokenizer, tiny_tokenizer

NL = "{{ '\\n' }}"
_SYSTEM = "{%- if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% else %}{% set sys = default_system %}{% endif -%}"
_CONTENT = "{% set c = m['content'] | replace('<image>', image_marker) %}"
REFERENCE = {
    "internvl2_5": _SYSTEM + "<|im_start|>system" + NL + "{{ sys }}<|im_end|>" + NL
    + "{%- for m in messages if m['role'] != 'system' %}" + _CONTENT
    + "{% if m['role'] == 'user' %}<|im_start|>user" + NL + "{{ c }}<|im_end|>" + NL
    + "{% else %}<|im_start|>assistant" + NL + "{% generation %}{{ c }}<|im_end|>{% endgeneration %}" + NL
    + "{% endif %}{% endfor %}",
    "internlm2-chat": _SYSTEM + "{{ bos_token }}<|im_start|>system" + NL + "{{ sys }}<|im_end|>"
    + "{%- for m in messages if m['role'] != 'system' %}" + _CONTENT
    + "{% if m['role'] == 'user' %}<|im_start|>user" + NL + "{{ c }}<|im_end|>"
    + "{% else %}<|im_start|>assistant" + NL + "{% generation %}{{ c }}<|im_end|>{% endgeneration %}"
    + "{% endif %}{% endfor %}",
    "qwen2vl": _SYSTEM + "<|im_start|>system" + NL + "{{ sys }}<|im_end|>" + NL
    + "{%- for m in messages if m['role'] != 'system' %}" + _CONTENT
    + "{% if m['role'] == 'user' %}<|im_start|>user" + NL + "{{ c }}<|im_end|>" + NL
    + "{% else %}<|im_start|>assistant" + NL + "{% generation %}{{ c }}<|im_end|>" + NL + "{% endgeneration %}"
    + "{% endif %}{% endfor %}",
    "llava-v1": _SYSTEM + "{{ bos_token }}{{ sys }}{{ ' ' }}"
    + "{%- for m in messages if m['role'] != 'system' %}" + _CONTENT
    + "{% if m['role'] == 'user' %}USER: {{ c }} "
    + "{% else %}ASSISTANT: {% generation %}{{ c }}{{ eos_token }}{% endgeneration %}"
    + "{% endif %}{% endfor %}",
    "plain": "{{ bos_token }}{%- for m in messages if m['role'] != 'system' %}"
    + "{% if m['role'] == 'user' %}{{ image_marker * m['content'].count('<image>') }}"
    + "{% else %}{% generation %}{{ m['content'] }}" + NL + "{% endgeneration %}{% endif %}{% endfor %}",
}
# What the HF processors expect in the text for one image, and how they expand its context token.
HF_MARKER = {"internvl": "<IMG_CONTEXT>", "qwen2vl": "<|vision_start|><|image_pad|><|vision_end|>", "llava": "<image>"}
FAMILY = {"internvl2_5": "internvl", "internlm2-chat": "internvl", "qwen2vl": "qwen2vl", "llava-v1": "llava", "plain": "llava"}

CONVERSATIONS = [
    ([("user", "<image>\nWhat is this?"), ("assistant", "A cat.")], [5]),
    ([("system", "Be brief."), ("user", "<image><image>\nCompare them."), ("assistant", " Same cat.\n"),
      ("user", "Why?"), ("assistant", "Because 12 34, really.")], [3, 7]),
    ([("user", "你好，这是什么？"), ("assistant", "你好！这是一只猫。")], []),
    ([("user", "Describe <image> please"), ("assistant", "\n  indented answer  "), ("user", "More"), ("assistant", "ok")], [2]),
]


def _reference(tokenizer, template, messages, counts):
    """HF: apply_chat_template with the jinja template, then the processor's context expansion."""
    family = FAMILY[template]
    out = tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in messages], chat_template=REFERENCE[template], tokenize=True,
        return_dict=True, return_assistant_tokens_mask=True, image_marker=HF_MARKER[family],
        default_system=TEMPLATES[template].default_system,
    )
    context = {"internvl": "<IMG_CONTEXT>", "qwen2vl": "<|image_pad|>", "llava": "<image>"}[family]
    context_id = tokenizer.convert_tokens_to_ids(context)
    ids, mask, images = [], [], iter(counts)
    for token, m in zip(out["input_ids"], out["assistant_masks"]):
        if token != context_id:
            ids.append(token), mask.append(m)
            continue
        expanded = [context_id] * next(images)
        if family == "internvl":
            expanded = [tokenizer.start_image_token_id] + expanded + [tokenizer.end_image_token_id]
        ids += expanded
        mask += [0] * len(expanded)
    ids = np.array(ids)
    return ids, np.where(np.array(mask, bool), ids, IGNORE_INDEX)


# plain (pre-training) conversations always carry an image
TINY_CASES = [(t, i) for t in TEMPLATES for i, (_, counts) in enumerate(CONVERSATIONS) if counts or t != "plain"]


@pytest.mark.parametrize("template, which", TINY_CASES)
def test_tiny_tokenizer_equals_apply_chat_template(template, which):
    messages, counts = CONVERSATIONS[which]
    _check(tiny_tokenizer(), template, messages, counts)


@pytest.mark.parametrize("template", ["internvl2_5", "qwen2vl"])
@pytest.mark.parametrize("which", range(len(CONVERSATIONS)))
def test_real_qwen2_vocab_equals_apply_chat_template(template, which):
    messages, counts = CONVERSATIONS[which]
    _check(qwen2_tokenizer(), template, messages, counts)


def _check(tokenizer, template, messages, counts):
    encoder = ConversationEncoder(tokenizer, template, FAMILY[template])
    got = encoder([Message(r, c) for r, c in messages], image_tokens=counts)
    ids, labels = _reference(tokenizer, template, messages, counts)
    np.testing.assert_array_equal(got.input_ids, ids)
    np.testing.assert_array_equal(got.labels, labels)
    assert (got.labels != IGNORE_INDEX).any()


def test_plain_learns_only_the_caption():
    tok = tiny_tokenizer()
    encoder = ConversationEncoder(tok, "plain", "llava")
    got = encoder([Message("user", "Summarize the photo.\n<image>"), Message("assistant", "a red bus")], image_tokens=[4])
    learned = tok.decode(got.labels[got.labels != IGNORE_INDEX])
    assert learned == "a red bus\n"
    assert got.input_ids[0] == tok.bos_token_id and (got.input_ids == tok.convert_tokens_to_ids("<image>")).sum() == 4


def test_placeholder_mismatch_and_literal_context_token_raise():
    encoder = ConversationEncoder(tiny_tokenizer(), "qwen2vl", "qwen2vl")
    with pytest.raises(PlaceholderError, match="do not match 2 image"):
        encoder([Message("user", "<image> hi"), Message("assistant", "x")], image_tokens=[4, 4])
    with pytest.raises(PlaceholderError, match="text holds 2 vision context token"):
        encoder([Message("user", "<image> <|image_pad|>"), Message("assistant", "x")], image_tokens=[4])


def _hf_processor(family, tokenizer):
    if family == "qwen2vl":
        Qwen2VLProcessor.video_processor_class = "Qwen2VLImageProcessor"  # torchvision-free: no video processor
        ip = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 64)
        return Qwen2VLProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=ip)
    if family == "internvl":
        InternVLProcessor.video_processor_class = "GotOcr2ImageProcessor"
        ip = GotOcr2ImageProcessor(size={"height": 448, "width": 448}, crop_to_patches=True, max_patches=4,
                                   image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
        return InternVLProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=ip, image_seq_length=256)
    ip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)


@pytest.mark.parametrize("template", ["internvl2_5", "qwen2vl", "llava-v1"])
def test_token_expansion_equals_hf_processor(template):
    """End to end on real images: our transform's token counts + encoder == the HF processor's ids."""
    family = FAMILY[template]
    tokenizer = qwen2_tokenizer() if family != "llava" else tiny_tokenizer()
    images = [_image(700, 300, 1), _image(200, 260, 2)]
    messages = [("user", "<image>\nLeft, and right:<image>"), ("assistant", "Two views."), ("user", "Sure?"), ("assistant", "Yes")]
    if family == "qwen2vl":
        transform = Qwen2VLImageTransform(min_pixels=56 * 56, max_pixels=28 * 28 * 64)
        counts = [int(np.prod(transform(im)[1])) // 4 for im in images]
    elif family == "internvl":
        transform = InternVLImageTransform(448, max_tiles=4)
        counts = [transform(im).shape[0] * 256 for im in images]
    else:
        counts = [576, 576]
    got = ConversationEncoder(tokenizer, template, family)([Message(r, c) for r, c in messages], image_tokens=counts)
    text = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages], chat_template=REFERENCE[template],
                                         tokenize=False, image_marker=HF_MARKER[family], default_system=TEMPLATES[template].default_system)
    expected = _hf_processor(family, tokenizer)(text=[text], images=images, add_special_tokens=False)["input_ids"][0]
    np.testing.assert_array_equal(got.input_ids, np.asarray(expected))


def test_tokenizer_without_the_vision_tokens_is_refused():
    # the real Qwen2 vocabulary has no LLaVA <image> token
    with pytest.raises(ValueError, match="tokenizer lacks '<image>'"):
        ConversationEncoder(qwen2_tokenizer(), "llava-v1", "llava")


def test_llava_image_token_added_to_a_text_only_tokenizer():
    """Stage 1 starts from Vicuna's tokenizer, which has no <image>: it is added as the next id
    (as HF's LLaVA-1.5 conversion does), once; other families' tokens are never invented."""
    import copy

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from msmm.data.templates import add_missing_vision_tokens

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "cat": 4}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    vicuna = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    assert add_missing_vision_tokens(copy.deepcopy(vicuna), "internvl") is None
    note = add_missing_vision_tokens(vicuna, "llava")
    assert "no <image> token, added as id 5" in note
    assert vicuna("<image>\na cat")["input_ids"] == [5, 3, 4]
    assert add_missing_vision_tokens(vicuna, "llava") is None
    encoder = ConversationEncoder(vicuna, "plain", "llava")
    assert list(encoder.context_ids) == [5]


@pytest.mark.parametrize("tokenizer", [tiny_tokenizer, qwen2_tokenizer])
def test_direct_backend_encoding_equals_the_tokenizer_call(tokenizer):
    """ConversationEncoder calls the Rust tokenizer itself when that is what tokenizer(text,
    add_special_tokens=False) does; the ids, labels and char -> token spans are the same, and
    with truncation, padding or special-token splitting set on the backend it calls the wrapper."""
    tok = tokenizer()
    for template in ("qwen2vl", "llava-v1", "internvl2_5") if tokenizer is tiny_tokenizer else ("qwen2vl", "internvl2_5"):
        encoder = ConversationEncoder(tok, template, FAMILY[template])
        assert encoder._backend is tok._tokenizer
        for messages, counts in CONVERSATIONS:
            messages = [Message(r, c) for r, c in messages]
            direct = encoder(messages, image_tokens=counts)
            encoder._backend = None
            wrapped = encoder(messages, image_tokens=counts)
            encoder._backend = tok._tokenizer
            np.testing.assert_array_equal(direct.input_ids, wrapped.input_ids)
            np.testing.assert_array_equal(direct.labels, wrapped.labels)
            text, _ = encoder.render(messages)
            tok._tokenizer.enable_truncation(4)  # the wrapper would turn it off: so must we
            ids, _ = encoder._encode(text)
            assert tok._tokenizer.truncation is None
            np.testing.assert_array_equal(ids, tok(text, add_special_tokens=False)["input_ids"])
