"""The query-conditioned U-Net separator (Sound of Pixels / CLIPSep / OmniSep; docs/method.md section 2).

Architecture (``full`` sizes; smaller profiles only change the channel numbers):

* input ``log(|X_warped| + 1e-10)`` of shape ``(B, 1, F, T)`` -> ``BatchNorm2d(1)``;
* 7 down blocks ``Conv 4x4 stride 2`` (+ BN + LeakyReLU(0.2) before the next conv), channels
  64-128-256-512-512-512-512; the outermost down block has no norm/activation, the innermost no BN;
* up blocks ``ReLU -> bilinear x2 -> Conv 3x3 -> BN`` with skip connections by concatenation;
  the outermost up block outputs ``K = 32`` feature maps ``A`` at full resolution, without BN;
* query path ``q~ = sigmoid(Linear(d, K)(q))``;
* inner-product fusion ``z(f, t) = sum_c s_c q~_c A_c(f, t) + b`` (``s`` initialised to 1, ``b`` to 0),
  mask proposal ``P = sigmoid(z)`` -- the mode of MARS-Sep's Beta policy;
* FiLM fusion as an option: ``z = sum_c s_c ((1 + gamma_c) A_c + beta_c) + b`` with ``(gamma, beta)`` a linear map of the query.

The U-Net does not see the query (it meets the K feature maps only at the output), so ``K``
queries of one mixture share one U-Net pass (:func:`multi_query_logits`, used by supervised
training, RL rollouts and evaluation alike).

Initialisation as the reference: conv weights ``N(0, 0.001)``, BN weights ``N(1, 0.02)``,
linear weights ``N(0, 1e-4)``, biases 0.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import Profile, SeparatorConfig


class UNetBlock(nn.Module):
    """One level of the U-Net: ``down -> submodule -> up``, concatenating its input as a skip.

    ``position`` is ``"outermost"``, ``"middle"`` or ``"innermost"``.
    """

    def __init__(self, outer_ch: int, inner_ch: int, in_ch: int | None = None,
                 submodule: nn.Module | None = None, position: str = "middle"):
        super().__init__()
        in_ch = outer_ch if in_ch is None else in_ch
        self.outermost = position == "outermost"
        down_conv = nn.Conv2d(in_ch, inner_ch, kernel_size=4, stride=2, padding=1, bias=False)
        up_in = inner_ch if position == "innermost" else inner_ch * 2
        up_conv = nn.Conv2d(up_in, outer_ch, kernel_size=3, padding=1, bias=self.outermost)
        upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        if position == "outermost":
            down = [down_conv]
            up = [nn.ReLU(True), upsample, up_conv]
        elif position == "innermost":
            down = [nn.LeakyReLU(0.2, True), down_conv]
            up = [nn.ReLU(True), upsample, up_conv, nn.BatchNorm2d(outer_ch)]
        elif position == "middle":
            down = [nn.LeakyReLU(0.2, True), down_conv, nn.BatchNorm2d(inner_ch)]
            up = [nn.ReLU(True), upsample, up_conv, nn.BatchNorm2d(outer_ch)]
        else:
            raise ValueError(f"position must be outermost, middle or innermost, got {position!r}")
        middle = [submodule] if submodule is not None else []
        self.model = nn.Sequential(*down, *middle, *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], dim=1)


class UNet(nn.Module):
    """Audio U-Net: ``(B, 1, F, T)`` log-magnitude -> ``(B, K, F, T)`` feature maps.

    ``F`` and ``T`` must be divisible by ``2 ** len(down_channels)``.
    """

    def __init__(self, down_channels: tuple[int, ...], n_maps: int):
        super().__init__()
        if len(down_channels) < 2:
            raise ValueError("a U-Net needs at least 2 levels")
        self.n_levels = len(down_channels)
        self.input_norm = nn.BatchNorm2d(1)
        ch = list(down_channels)
        block = UNetBlock(ch[-2], ch[-1], position="innermost")
        for i in range(len(ch) - 2, 0, -1):
            block = UNetBlock(ch[i - 1], ch[i], submodule=block)
        self.net = UNetBlock(n_maps, ch[0], in_ch=1, submodule=block, position="outermost")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the last up-path layer: the outermost level's concatenated skip and
        inner output, ``(B, 2 ch_0, F/2, T/2)``.

        RL with ``trainable="head"`` freezes this part and computes it once per rollout.
        """
        f, t = x.shape[-2:]
        m = 2**self.n_levels
        if f % m or t % m:
            raise ValueError(f"spectrogram {f}x{t} must be divisible by {m} for a {self.n_levels}-level U-Net")
        down_conv, inner = self.net.model[:2]
        return inner(down_conv(self.input_norm(x)))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The last up-path layer (ReLU, 2x upsampling, 3x3 convolution): trunk output -> ``(B, K, F, T)`` maps."""
        for layer in self.net.model[2:]:
            h = layer(h)
        return h

    def head_modules(self) -> list[nn.Module]:
        """The modules :meth:`head` runs (their parameters are the U-Net part of the RL 'head')."""
        return list(self.net.model[2:])


class QuerySeparator(nn.Module):
    """U-Net + query conditioning; ``forward`` returns the mask proposal ``P`` in [0, 1].

    Shape:
        features: ``(batch, 1, F, T)`` log-magnitude of the warped mixture spectrogram.
        query: ``(batch, query_dim)`` query embedding (text, image, audio or a mix).
        returns: ``(batch, F, T)`` mask proposal ``P`` (or logits ``z`` with ``return_logits``).
    """

    def __init__(self, cfg: SeparatorConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = UNet(tuple(cfg.down_channels), cfg.n_maps)
        k = cfg.n_maps
        if cfg.conditioning == "inner":
            self.query_proj = nn.Linear(cfg.query_dim, k)
            self.scale = nn.Parameter(torch.ones(k))
        elif cfg.conditioning == "film":
            self.query_proj = nn.Linear(cfg.query_dim, 2 * k)
            self.scale = nn.Parameter(torch.ones(k) / k)
        else:
            raise ValueError(f"conditioning must be 'inner' or 'film', got {cfg.conditioning!r}")
        self.bias = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation (Sound of Pixels' ``weights_init``)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1e-4)
                nn.init.zeros_(m.bias)

    def query_vector(self, query: torch.Tensor) -> torch.Tensor:
        """``q~ = sigmoid(W q + c)`` (inner) or ``(gamma, beta)`` stacked (film). Shape ``(batch, K or 2K)``."""
        self._check_query_type(query)
        if query.dim() != 2 or query.shape[1] != self.cfg.query_dim:
            raise ValueError(f"query must be (batch, {self.cfg.query_dim}), got {tuple(query.shape)}")
        h = self.query_proj(query)
        return torch.sigmoid(h) if self.cfg.conditioning == "inner" else h

    def inner_logits(self, maps: torch.Tensor, qv: torch.Tensor) -> torch.Tensor:
        """Inner-product fusion for ``Q`` query vectors per map stack: ``z_q = sum_c s_c q~_{q,c} A_c + b``.

        A batched matmul ``(B, Q, C) @ (B, C, F T)`` (on CPU about 10x faster than the equivalent
        einsum, which permutes the maps), so the maps are never copied once per query.

        Shape:
            maps: ``(B, C, F, T)``; qv: ``(B, Q, C)``; returns ``(B, Q, F, T)``.
        """
        b, q = qv.shape[:2]
        return torch.bmm(qv * self.scale, maps.flatten(2)).reshape(b, q, *maps.shape[-2:]) + self.bias

    def fuse(self, maps: torch.Tensor, qv: torch.Tensor) -> torch.Tensor:
        """Logits ``z`` from feature maps ``(B, K, F, T)`` and the query vector."""
        if self.cfg.conditioning == "inner":
            return self.inner_logits(maps, qv.unsqueeze(1))[:, 0]
        gamma, beta = qv.chunk(2, dim=1)
        modulated = (1 + gamma)[:, :, None, None] * maps + beta[:, :, None, None]
        return torch.matmul(self.scale, modulated.flatten(2)).reshape(maps.shape[0], *maps.shape[-2:]) + self.bias

    def head_parameter_names(self) -> list[str]:
        """Names of the parameters after the U-Net trunk: the last up-convolution and the query
        conditioning (``query_proj``, ``scale``, ``bias``) -- what RL trains with ``trainable="head"``."""
        head = {id(p) for m in self.unet.head_modules() for p in m.parameters()}
        return [n for n, p in self.named_parameters()
                if id(p) in head or n.split(".")[0] in ("query_proj", "scale", "bias")]

    def _check_query_type(self, query) -> None:
        if not isinstance(query, torch.Tensor):
            raise TypeError(f"query is {type(query).__name__}: pass a (batch, {self.cfg.query_dim}) tensor, the embedding "
                            "of a text, image, audio, omni or mixup query (mars_core.queries.compose)")

    def forward(self, features: torch.Tensor, query: torch.Tensor, return_logits: bool = False) -> torch.Tensor:
        self._check_query_type(query)
        if features.dim() != 4 or features.shape[1] != 1:
            raise ValueError(f"features must be (batch, 1, F, T), got {tuple(features.shape)}")
        if features.shape[0] != query.shape[0]:
            raise ValueError(f"batch sizes differ: features {features.shape[0]}, query {query.shape[0]}")
        z = self.fuse(self.unet(features), self.query_vector(query))
        return z if return_logits else torch.sigmoid(z)


def new_separator(profile: Profile, seed: int, query_init_std: float = 0.0) -> QuerySeparator:
    """A freshly initialised separator whose weights depend only on ``seed``.

    ``query_init_std > 0`` redraws the query projection ``W ~ N(0, query_init_std^2)``
    (``SupervisedConfig.query_init_std``); 0 keeps the reference ``N(0, 1e-4)``.
    """
    if query_init_std < 0:
        raise ValueError(f"query_init_std must be >= 0, got {query_init_std}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = QuerySeparator(profile.separator)
        if query_init_std > 0:
            with torch.no_grad():
                model.query_proj.weight.normal_(0.0, query_init_std)
    return model


def multi_query_logits(model: QuerySeparator, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Logits of ``K`` queries per mixture with one U-Net pass per mixture.

    Equals ``model(features[b], queries[b, k], return_logits=True)`` for every ``(b, k)``
    (the query meets the U-Net's maps only in the output fusion).

    Shape:
        features: ``(B, 1, F, T)``; queries: ``(B, K, D)``; returns ``(B, K, F, T)``.
    """
    if queries.dim() != 3 or queries.shape[0] != features.shape[0]:
        raise ValueError(f"queries must be (batch={features.shape[0]}, K, D), got {tuple(queries.shape)}")
    return logits_from_trunk(model, model.unet.trunk(features), queries)


def logits_from_trunk(model: QuerySeparator, trunk: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """:func:`multi_query_logits` from the U-Net's trunk output (``model.unet.trunk(features)``).

    Shape:
        trunk: ``(B, 2 ch_0, F/2, T/2)``; queries: ``(B, K, D)``; returns ``(B, K, F, T)``.
    """
    b, k, d = queries.shape
    maps = model.unet.head(trunk)  # (B, C, F, T)
    qv = model.query_vector(queries.reshape(b * k, d)).reshape(b, k, -1)
    if model.cfg.conditioning == "inner":  # without copying the maps K times
        return model.inner_logits(maps, qv)
    rep = maps.unsqueeze(1).expand(b, k, *maps.shape[1:]).reshape(b * k, *maps.shape[1:])
    return model.fuse(rep, qv.reshape(b * k, -1)).reshape(b, k, *maps.shape[-2:])
