"""The 8-bit link's per-image header (:data:`~isplit.deploy.manifest.INT8_HEADER_BYTES`) is the
byte count a real encoded request carries besides the code, so the manifest, the command line and
the bottleneck's byte counts cannot drift from what the client sends."""

import numpy as np
import pytest
import torch

from isplit.deploy.client import request_tensors
from isplit.deploy.manifest import INT8_HEADER_BYTES, served_inputs
from isplit.deploy.wire import encode_request
from isplit.validation.bottleneck import INT8_HEADER_BYTES as BOTTLENECK_HEADER
from isplit.validation.bottleneck import Bottleneck, quantize_uint8


@pytest.mark.parametrize("shape", [(4, 3, 3), (7,), (2, 5, 1)])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_header_constant_is_what_an_encoded_request_carries_besides_the_code(shape, batch):
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    body, json_length = encode_request(request_tensors(x, quantize=True), binary=True)
    binary = len(body) - json_length
    code = batch * int(np.prod(shape))  # one byte per value
    assert binary - code == batch * INT8_HEADER_BYTES


def test_the_header_constant_is_the_codec_s_scale_and_zero_point_per_image():
    q, scale, zero_point = quantize_uint8(torch.randn(2, 3, 4, 4))
    per_image = (scale.numpy().nbytes + zero_point.numpy().nbytes) // 2
    assert per_image == INT8_HEADER_BYTES
    header = served_inputs((3, 4, 4), quantized=True)[1:]  # scale, zero_point
    assert sum(spec.nbytes(1) for spec in header) == INT8_HEADER_BYTES


def test_every_byte_count_of_the_8_bit_link_uses_the_one_constant():
    assert BOTTLENECK_HEADER is INT8_HEADER_BYTES
    b = Bottleneck((1, 8, 4, 4), ratio=2)
    assert b.encoded_bytes_int8 == int(np.prod(b.code_shape)) + INT8_HEADER_BYTES
