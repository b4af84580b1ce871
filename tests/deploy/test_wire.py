"""The Open Inference Protocol messages on their own (no model, no server): what a client sends
comes back out of the server's decoder unchanged, and every malformed request is refused with the
status and message a client can act on."""

import json

import numpy as np
import pytest

from isplit.deploy.manifest import TensorSpec
from isplit.deploy.wire import (
    HEADER,
    WireError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

ACT = TensorSpec("activation", "FP32", (-1, 4, 2, 2))
CODE = TensorSpec("activation", "UINT8", (-1, 4, 2, 2))
SCALE = TensorSpec("scale", "FP32", (-1, 1))
ZERO = TensorSpec("zero_point", "FP32", (-1, 1))
LOGITS = TensorSpec("logits", "FP32", (-1, 10))


def _header(length: int | None) -> str | None:
    return None if length is None else str(length)


@pytest.mark.parametrize("binary", [True, False])
def test_a_request_decodes_to_the_arrays_that_were_sent(binary):
    x = np.random.default_rng(0).standard_normal((3, 4, 2, 2)).astype(np.float32)
    body, length = encode_request([(ACT, x)], binary=binary, request_id="r-1")
    assert (length is None) == (not binary)
    got = decode_request(body, _header(length), [ACT], [LOGITS])
    assert got.batch == 3 and got.request_id == "r-1" and got.binary_output
    np.testing.assert_array_equal(got.arrays[0], x)


def test_the_8_bit_request_keeps_its_inputs_in_the_models_order():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 256, (2, 4, 2, 2), dtype=np.uint8)
    scale = np.full((2, 1), 0.5, np.float32)
    zero = np.zeros((2, 1), np.float32)
    body, length = encode_request([(ZERO, zero), (CODE, q), (SCALE, scale)])
    got = decode_request(body, _header(length), [CODE, SCALE, ZERO], [LOGITS])
    assert [a.dtype for a in got.arrays] == [np.uint8, np.float32, np.float32]
    np.testing.assert_array_equal(got.arrays[0], q)


@pytest.mark.parametrize("binary", [True, False])
def test_a_response_decodes_to_the_logits_that_were_sent(binary):
    logits = np.arange(20, dtype=np.float32).reshape(2, 10)
    body, length = encode_response(
        "m", [(LOGITS, logits)], binary=binary, parameters={"batch": 2}, request_id="x"
    )
    doc, arrays = decode_response(body, _header(length))
    assert doc["model_name"] == "m" and doc["id"] == "x" and doc["parameters"] == {"batch": 2}
    np.testing.assert_array_equal(arrays["logits"], logits)


def _json_request(**item) -> bytes:
    base = {"name": "activation", "datatype": "FP32", "shape": [1, 4, 2, 2], "data": [0.0] * 16}
    return json.dumps({"inputs": [{**base, **item}]}).encode()


@pytest.mark.parametrize(
    "body, says",
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'{"inputs": 3}', "needs 'inputs'"),
        (_json_request(name="other"), "unknown input 'other'; this model takes activation (FP32)"),
        (_json_request(datatype="FP16"), "has datatype 'FP16'; this model takes FP32"),
        (_json_request(shape=[1, 4, 2, 3]), "this model takes Nx4x2x2"),
        (_json_request(shape=[0, 4, 2, 2]), "this model takes Nx4x2x2"),
        (_json_request(data=[0.0] * 15), "holds 15 values; shape [1, 4, 2, 2] needs 16"),
        (_json_request(data=["a"] * 16), "'data' must be a list of numbers"),
        (_json_request(data={"a": 1}), "'data' must be a list of numbers"),
        (
            b'{"inputs": [{"name": "activation", "datatype": "FP32", "shape": [1, 4, 2, 2], '
            b'"data": [NaN' + b", 0" * 15 + b"]}]}",
            "not valid JSON",
        ),  # fmt: skip
    ],
)
def test_malformed_requests_are_refused_with_a_clear_400(body, says):
    with pytest.raises(WireError) as e:
        decode_request(body, None, [ACT], [LOGITS])
    assert e.value.status == 400 and says in str(e.value)


def test_binary_byte_counts_are_checked_against_the_shape_and_the_body():
    x = np.zeros((1, 4, 2, 2), np.float32)
    body, length = encode_request([(ACT, x)])
    with pytest.raises(WireError, match="the body is truncated"):
        decode_request(body[:-4], str(length), [ACT], [LOGITS])
    with pytest.raises(WireError, match="the inputs declare 64"):
        decode_request(body + b"\0" * 4, str(length), [ACT], [LOGITS])
    with pytest.raises(WireError, match="must be a byte count"):
        decode_request(body, "ten", [ACT], [LOGITS])
    with pytest.raises(WireError, match=f"{HEADER} is 100000"):
        decode_request(body, "100000", [ACT], [LOGITS])


def test_values_a_tail_cannot_use_are_refused():
    x = np.zeros((1, 4, 2, 2), np.float32)
    x[0, 0, 0, 0] = np.inf
    body, length = encode_request([(ACT, x)])
    with pytest.raises(WireError, match="holds NaN or infinity"):
        decode_request(body, str(length), [ACT], [LOGITS])
    q = np.zeros((1, 4, 2, 2), np.uint8)
    body, length = encode_request(
        [(CODE, q), (SCALE, np.zeros((1, 1), np.float32)), (ZERO, np.zeros((1, 1), np.float32))]
    )
    with pytest.raises(WireError, match="'scale' must be positive"):
        decode_request(body, str(length), [CODE, SCALE, ZERO], [LOGITS])
    code = json.dumps(
        {
            "inputs": [
                {
                    "name": "activation",
                    "datatype": "UINT8",
                    "shape": [1, 4, 2, 2],
                    "data": [300] * 16,
                }
            ]
        }  # fmt: skip
    ).encode()
    with pytest.raises(WireError, match="integers 0-255"):
        decode_request(code, None, [CODE], [LOGITS])


def test_the_client_chooses_json_or_binary_outputs():
    x = np.zeros((1, 4, 2, 2), np.float32)
    body, _ = encode_request([(ACT, x)], binary=False, binary_output=False)
    assert decode_request(body, None, [ACT], [LOGITS]).binary_output is False
    doc = json.loads(body)
    doc["outputs"] = [{"name": "logits", "parameters": {"binary_data": True}}]
    assert decode_request(json.dumps(doc).encode(), None, [ACT], [LOGITS]).binary_output
    doc["outputs"] = [{"name": "probabilities"}]
    with pytest.raises(WireError, match="unknown output 'probabilities'; this model gives logits"):
        decode_request(json.dumps(doc).encode(), None, [ACT], [LOGITS])


def test_a_response_in_an_unknown_datatype_is_a_bad_gateway():
    body = json.dumps(
        {"outputs": [{"name": "logits", "datatype": "BF17", "shape": [1], "data": [0]}]}
    ).encode()
    with pytest.raises(WireError) as e:
        decode_response(body, None)
    assert e.value.status == 502
