"""MultiheadAttention and TransformerEncoderLayer, with PyTorch's parameters, names and semantics,
so that a torch state dict loads into them.

>>> mha = nn.MultiheadAttention(64, 4, batch_first=True)
>>> y, _ = mha(x, x, x, need_weights=False)                  # x [N, L, 64]
>>> layer = nn.TransformerEncoderLayer(64, 4, 256, dropout=0.1, activation="gelu",
...                                    batch_first=True, norm_first=True)

Attention runs through F.scaled_dot_product_attention. Masks follow torch's MultiheadAttention (the
opposite of SDPA's bool convention): a True in attn_mask [L, S] or [N * heads, L, S], or in
key_padding_mask [N, S], means "does not take part"; floating masks are added to the scores.
"""
from .. import dtypes
from ..creation import empty, eye
from ..tensor import Tensor, where
from . import functional as F, init
from .dropout import Dropout
from .linear import Linear
from .module import Module
from .normalization import LayerNorm
from .parameter import Parameter

__all__ = ["MultiheadAttention", "TransformerEncoderLayer"]


def _additive(mask, what):
    """A torch MHA mask as scores to add: bool True -> -inf, False -> 0; floating as it is."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"MultiheadAttention: {what} must be a Tensor, not {type(mask).__name__}")
    if mask.dtype is dtypes.bool_:
        return where(mask, float("-inf"), 0.0)
    if not mask.dtype.is_floating:
        raise TypeError(f"MultiheadAttention: {what} must be bool or floating, not "
                        f"{mask.dtype.name}")
    return mask


class MultiheadAttention(Module):
    """softmax(Q_h K_h^T / sqrt(d) + mask) V_h for each of num_heads heads of width
    d = embed_dim / num_heads, the heads concatenated and projected by out_proj.

    Q, K, V = query @ W_q^T + b_q, ... with [W_q; W_k; W_v] = in_proj_weight [3E, E] and
    in_proj_bias [3E] (xavier_uniform_ and zeros, as torch); out_proj is a Linear(E, E) with a
    zero bias. Inputs are [L, N, E] ([N, L, E] with batch_first, [L, E] unbatched). forward returns
    (output, weights): weights [N, L, S] averaged over the heads (per head with
    average_attn_weights=False) when need_weights, else None. dropout applies to the attention
    weights in training mode. Only kdim = vdim = embed_dim, without bias_kv or zero_attn.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} must be a positive "
                             f"multiple of num_heads {num_heads}")
        if add_bias_kv or add_zero_attn or kdim not in (None, embed_dim) or vdim not in (
                None, embed_dim):
            raise NotImplementedError("MultiheadAttention: add_bias_kv, add_zero_attn and kdim or "
                                      "vdim other than embed_dim are not supported")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim, self.batch_first = embed_dim // num_heads, batch_first
        dtype = dtype or "float32"
        self.in_proj_weight = Parameter(empty((3 * embed_dim, embed_dim), dtype, device))
        if bias:
            self.in_proj_bias = Parameter(empty((3 * embed_dim,), dtype, device))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self):
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        batched = query.ndim == 3
        if not batched:
            query, key, value = (t.expand_dims(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.expand_dims(0)
        elif not self.batch_first:
            query, key, value = (t.swapaxes(0, 1) for t in (query, key, value))
        if query.ndim != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention: query of shape {query.shape} does not end in "
                             f"embed_dim {self.embed_dim}")
        n, big_l, e = query.shape
        s = key.shape[1]
        heads = (n, -1, self.num_heads, self.head_dim)
        if query is key and key is value:  # self-attention: one product for Q, K and V
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
            q, k, v = (qkv[..., i * e:(i + 1) * e] for i in range(3))
        else:
            w, b = self.in_proj_weight, self.in_proj_bias
            q, k, v = (F.linear(x, w[i * e:(i + 1) * e],
                                None if b is None else b[i * e:(i + 1) * e])
                       for i, x in enumerate((query, key, value)))
        q, k, v = (t.reshape(heads).swapaxes(1, 2) for t in (q, k, v))
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, "attn_mask")
            if mask.ndim == 3:  # [N * heads, L, S]
                mask = mask.reshape((n, self.num_heads, big_l, s))
        if key_padding_mask is not None:
            pad = _additive(key_padding_mask, "key_padding_mask").reshape((n, 1, 1, s))
            mask = pad if mask is None else mask + pad
        causal = is_causal and mask is None  # with a mask, is_causal is only torch's hint
        p = self.dropout if self.training else 0.0
        if need_weights:
            # the weights themselves: attention applied to the identity, then to V
            weights = F.scaled_dot_product_attention(
                q, k, eye(s, dtype=q.dtype, device=q.device), mask, p, causal)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, p, causal)
        out = self.out_proj(out.swapaxes(1, 2).reshape((n, big_l, e)))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.swapaxes(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(axis=1)
        return out, (weights if batched else weights.squeeze(0))

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"dropout={self.dropout}, batch_first={self.batch_first}")


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with dropout and a residual connection,
    as torch: post-norm x = norm1(x + sa(x)); x = norm2(x + ff(x)), or with norm_first
    x = x + sa(norm1(x)); x = x + ff(norm2(x)), where sa(x) = dropout1(self_attn(x, x, x)) and
    ff(x) = dropout2(linear2(dropout(activation(linear1(x))))). activation: "relu", "gelu" or a
    callable."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(activation, str):
            if activation not in ("relu", "gelu"):
                raise ValueError(f"TransformerEncoderLayer: activation must be 'relu', 'gelu' or "
                                 f"a callable, not {activation!r}")
            activation = F.relu if activation == "relu" else F.gelu
        kw = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, bias,
                                            batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias, **kw)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, layer_norm_eps, bias=bias, **kw)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.activation = activation

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff(x))

    def _sa(self, x, mask, padding, is_causal):
        return self.dropout1(self.self_attn(x, x, x, padding, False, mask,
                                            is_causal=is_causal)[0])

    def _ff(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))
