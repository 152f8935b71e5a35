"""An oracle of the published S3-OCTA forward, written from its public code's semantics directly on its
state dict (functional ops only, no retina.models): stages of [conv | snake morph 1 | snake morph 0] ->
fusion, the MiT branch as unfold + 1x1 embedding, channel layer norm with eps on the std, head-major
attention over stride-4 keys and values, Mix-FFN; nn.Upsample(x2, bilinear, align_corners) and max
pooling; a sigmoid at the end. The snake sampling is retina_kernels.reference.dsconv2d, which the
goldens check against the public DSConv."""

import torch
import torch.nn.functional as F

from retina_kernels.reference.dsconv import dsconv2d


def _conv_gn_relu(state, prefix, x):
    w = state[prefix + "conv.weight"]
    y = F.conv2d(x, w, state[prefix + "conv.bias"], padding=1)
    y = F.group_norm(y, w.shape[0] // 4, state[prefix + "gn.weight"], state[prefix + "gn.bias"])
    return F.relu(y)


def _snake(state, prefix, x, morph, kernel_size, extend_scope):
    offset = F.conv2d(x, state[prefix + "offset_conv.weight"], state[prefix + "offset_conv.bias"], padding=1)
    offset = F.group_norm(offset, kernel_size, state[prefix + "gn_offset.weight"], state[prefix + "gn_offset.bias"])
    offset = torch.tanh(offset)
    taps = offset[:, :kernel_size] if morph == 0 else offset[:, kernel_size:]
    conv = "dsc_conv_x" if morph == 0 else "dsc_conv_y"
    weight = state[prefix + conv + ".weight"]
    weight = weight.squeeze(3) if morph == 0 else weight.squeeze(2)
    y = dsconv2d(x, taps, weight, state[prefix + conv + ".bias"], morph=morph, extend_scope=extend_scope)
    y = F.group_norm(y, weight.shape[0] // 4, state[prefix + "gn.weight"], state[prefix + "gn.bias"])
    return F.relu(y)


def _stage(state, index, x, kernel_size, extend_scope):
    p = f"dsconvs.{index}."
    parts = [_conv_gn_relu(state, p + "conv.", x), _snake(state, p + "dsconv_x.", x, 1, kernel_size, extend_scope),
             _snake(state, p + "dsconv_y.", x, 0, kernel_size, extend_scope)]
    return _conv_gn_relu(state, p + "conv_fusion.", torch.cat(parts, 1))


def _layer_norm(x, g, b):
    std = torch.var(x, dim=1, unbiased=False, keepdim=True).sqrt()
    return (x - x.mean(dim=1, keepdim=True)) / (std + 1e-5) * g + b


def _mit(state, level, x, heads=8):
    p = f"ga_blocks.{level}.mit.stages.0."
    b, c, h, w = x.shape
    patches = F.unfold(x, 3, padding=1).reshape(b, c * 9, h, w)
    x = F.conv2d(patches, state[p + "1.weight"], state[p + "1.bias"])
    a = p + "2.0.0."
    n = _layer_norm(x, state[a + "norm.g"], state[a + "norm.b"])
    q = F.conv2d(n, state[a + "fn.to_q.weight"])
    k, v = F.conv2d(n, state[a + "fn.to_kv.weight"], stride=4).chunk(2, dim=1)
    dim = x.shape[1]

    def rows(t):  # 'b (h c) x y -> (b h) (x y) c'
        return t.reshape(b, heads, dim // heads, -1).permute(0, 1, 3, 2).reshape(b * heads, -1, dim // heads)

    sim = torch.einsum("bid,bjd->bij", rows(q), rows(k)) * (dim // heads) ** -0.5
    out = torch.einsum("bij,bjd->bid", sim.softmax(-1), rows(v))
    out = out.reshape(b, heads, h * w, dim // heads).permute(0, 1, 3, 2).reshape(b, dim, h, w)
    x = F.conv2d(out, state[a + "fn.to_out.weight"]) + x
    f = p + "2.0.1."
    n = _layer_norm(x, state[f + "norm.g"], state[f + "norm.b"])
    y = F.conv2d(n, state[f + "fn.net.0.weight"], state[f + "fn.net.0.bias"])
    hidden = y.shape[1]
    y = F.conv2d(y, state[f + "fn.net.1.net.0.weight"], state[f + "fn.net.1.net.0.bias"], padding=1, groups=hidden)
    y = F.conv2d(y, state[f + "fn.net.1.net.1.weight"], state[f + "fn.net.1.net.1.bias"])
    y = F.conv2d(F.gelu(y), state[f + "fn.net.3.weight"], state[f + "fn.net.3.bias"])
    return y + x


def public_s3octa_forward(state, x, depth=3, kernel_size=11, extend_scope=3.0):
    """The public model's output (a sigmoid) for x [B, 3, H, W], H and W divisible by 2^(depth-1)."""
    def up(t):
        return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True)

    features = []
    for i in range(depth):
        xi = _stage(state, i, x, kernel_size, extend_scope)
        if i < depth - 1:
            features.append(torch.cat([xi, _mit(state, i, x)], 1) if i > 0 else xi)
            x = F.max_pool2d(xi, 2)
        else:
            x = xi
    x = up(x)
    for i in range(1, depth - 1)[::-1]:
        x = up(_stage(state, 2 * (depth - 1) - i, torch.cat([x, features[i]], 1), kernel_size, extend_scope))
    x = _stage(state, 2 * (depth - 1), torch.cat([x, features[0]], 1), kernel_size, extend_scope)
    return torch.sigmoid(F.conv2d(x, state["out_conv.weight"], state["out_conv.bias"]))
