# torch-style cases of torch.nn.functional; `torch` is injected by tests/adapters/harness.load_cases
F = torch.nn.functional


def linear(x, w, b):
    return F.linear(x, w, b)


def linear_nobias(x, w):
    return F.linear(x, w)


def conv2d(x, w, b):
    return F.conv2d(x, w, b, stride=2, padding=1)


def conv2d_same_dilated(x, w):
    return F.conv2d(x, w, padding="same", dilation=2)


def conv2d_groups_valid(x, w, b):
    return F.conv2d(x, w, b, stride=(1, 2), padding="valid", groups=2)


def conv2d_unbatched(x, w):
    return F.conv2d(x, w, padding=(1, 0))


def conv3d(x, w, b):
    return F.conv3d(x, w, b, stride=(2, 2, 2), padding=(0, 1, 1))


def conv3d_same_groups(x, w):
    return F.conv3d(x, w, padding="same", groups=2)


def layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-6)


def layer_norm_2d_noaffine(x):
    return F.layer_norm(x, x.shape[-2:])


def rms_norm(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, eps=1e-6)


def rms_norm_default_eps(x):
    return F.rms_norm(x, x.shape[-2:])


def group_norm(x, w, b):
    return F.group_norm(x, 2, w, b)


def normalize(x):
    return F.normalize(x, dim=-1)


def gelu(x):
    return F.gelu(x)


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def silu(x):
    return F.silu(x)


def relu(x):
    return F.relu(x)


def sigmoid(x):
    return F.sigmoid(x)


def tanh(x):
    return F.tanh(x)


def softmax(x):
    return F.softmax(x, dim=-1)


def softmax_dim1_float64(x):
    return F.softmax(x, 1, dtype=torch.float64)


def log_softmax(x):
    return F.log_softmax(x, dim=1)


def cross_entropy(logits, target):
    return F.cross_entropy(logits, target)


def cross_entropy_sum_ignore(logits, target):
    return F.cross_entropy(logits, target, ignore_index=1, reduction="sum")


def cross_entropy_none_weight(logits, target, weight):
    return F.cross_entropy(logits, target, weight=weight, reduction="none")


def cross_entropy_mean_weight_smoothing(logits, target, weight):
    return F.cross_entropy(logits, target, weight=weight, label_smoothing=0.1)


def cross_entropy_spatial_smoothing(logits, target):
    # (N, C, L) logits, (N, L) targets with ignored positions
    return F.cross_entropy(logits, target, label_smoothing=0.2)


def cross_entropy_probs(logits, probs):
    return F.cross_entropy(logits, probs, label_smoothing=0.1)


def cross_entropy_probs_sum_weight(logits, probs, weight):
    return F.cross_entropy(logits, probs, weight=weight, reduction="sum")


def cross_entropy_unbatched(logits, target):
    return F.cross_entropy(logits, target, reduction="none")


def nll_loss(logp, target):
    return F.nll_loss(logp, target)


def nll_loss_weight_none(logp, target, weight):
    return F.nll_loss(logp, target, weight=weight, reduction="none")


def mse_loss(x, y):
    return F.mse_loss(x, y)


def mse_loss_none(x, y):
    return F.mse_loss(x, y, reduction="none")


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def sdpa_causal_scale(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)


def sdpa_bool_mask(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sdpa_additive_mask(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sdpa_gqa_causal(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def sdpa_dropout_zero(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)


def interpolate_bicubic(x):
    return F.interpolate(x, size=(7, 5), mode="bicubic", align_corners=False)


def interpolate_bicubic_align(x):
    return F.interpolate(x, scale_factor=1.5, mode="bicubic", align_corners=True)


def interpolate_bicubic_down(x):
    return F.interpolate(x, size=(3, 2), mode="bicubic", align_corners=False)


def interpolate_bilinear(x):
    return F.interpolate(x, scale_factor=(2, 0.5), mode="bilinear", align_corners=False)


def interpolate_bilinear_align(x):
    return F.interpolate(x, size=(9, 3), mode="bilinear", align_corners=True)


def interpolate_nearest(x):
    return F.interpolate(x, size=(7, 3))


def interpolate_nearest_scale(x):
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def interpolate_nearest_3d(x):
    return F.interpolate(x, scale_factor=(1.0, 2.0, 0.5), mode="nearest")


def interpolate_linear(x):
    return F.interpolate(x, size=11, mode="linear")


def interpolate_area(x):
    return F.interpolate(x, size=(3, 4), mode="area")


def interpolate_trilinear(x):
    return F.interpolate(x, size=(2, 3, 5), mode="trilinear", align_corners=False)


def pad_constant(x):
    return F.pad(x, (1, 2, 0, 1), value=0.5)


def pad_reflect(x):
    return F.pad(x, (2, 1, 1, 2), mode="reflect")


def pad_replicate(x):
    return F.pad(x, (2, 1, 1, 3), mode="replicate")


def pad_last_dim(x):
    return F.pad(x, (0, 3))


def embedding(ids, w):
    return F.embedding(ids, w)


def embedding_padding(ids, w):
    return F.embedding(ids, w, padding_idx=-1)


def dropout_eval(x):
    return F.dropout(x, p=0.5, training=False)


def dropout_p0(x):
    return F.dropout(x, p=0.0)


def pixel_shuffle(x):
    return F.pixel_shuffle(x, 2)


def pixel_unshuffle(x):
    return F.pixel_unshuffle(x, 2)


def one_hot(ids):
    return F.one_hot(ids, 5)


def one_hot_inferred(ids):
    return F.one_hot(ids)
