# torch-style cases of torch.nn layers; `torch` is injected by tests/adapters/harness.load_cases
nn = torch.nn


def linear():
    return nn.Linear(4, 3)


def linear_nobias():
    return nn.Linear(4, 3, bias=False)


def conv2d():
    return nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)


def conv2d_same_groups_nobias():
    return nn.Conv2d(4, 6, kernel_size=(2, 3), padding="same", dilation=(1, 2), groups=2, bias=False)


def conv2d_reflect():
    return nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")


def conv2d_patch_embed():  # InternViT / CLIP style: kernel = stride = patch size, valid padding
    return nn.Conv2d(3, 8, kernel_size=4, stride=4, padding="valid")


def conv3d():
    return nn.Conv3d(3, 4, kernel_size=(2, 3, 3), stride=(2, 1, 1), padding=(0, 1, 1))


def conv3d_patch_embed_nobias():  # Qwen2-VL style temporal patch embedding
    return nn.Conv3d(3, 8, kernel_size=(2, 2, 2), stride=(2, 2, 2), bias=False)


def layer_norm():
    return nn.LayerNorm(8, eps=1e-6)


def layer_norm_nobias():
    return nn.LayerNorm((3, 8), bias=False)


def layer_norm_no_affine():
    return nn.LayerNorm(8, elementwise_affine=False)


def rms_norm():
    return nn.RMSNorm(8, eps=1e-6)


def rms_norm_default_eps():
    return nn.RMSNorm([8])


def group_norm():
    return nn.GroupNorm(2, 4)


def group_norm_nobias():
    return nn.GroupNorm(3, 6, eps=1e-3, bias=False)


def embedding():
    return nn.Embedding(10, 4)


def embedding_padding():
    return nn.Embedding(10, 4, padding_idx=0)


def dropout_eval():
    return nn.Dropout(0.3).eval()


def dropout_p0():
    return nn.Dropout(0.0)


def gelu():
    return nn.GELU()


def gelu_tanh():
    return nn.GELU(approximate="tanh")


def silu():
    return nn.SiLU()


def relu():
    return nn.ReLU()


def tanh():
    return nn.Tanh()


def sigmoid():
    return nn.Sigmoid()


def softmax():
    return nn.Softmax(dim=-1)


def log_softmax():
    return nn.LogSoftmax(dim=1)


def identity():
    return nn.Identity(54, unused="argument")


class MLP(nn.Module):
    """A LLaVA-style projector: parameter names must be torch's (fc1.weight, norm.bias, ...)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(6, 3)
        self.out = nn.Sequential(nn.Linear(3, 3, bias=False), nn.SiLU())

    def forward(self, x):
        return self.out(self.fc2(self.act(self.fc1(self.norm(x)))))


def mlp():
    return MLP()
