"""A 4-block toy model's profiles, hand-made: the chooser, belief, simulator and benchmark
tests all reason about this one model."""

from __future__ import annotations

from splitting.latency import DeviceProfile
from splitting.profiling import ModelProfile, SplitPoint
from splitting.server_profile import ServerProfile

# A 4-block toy model as measured on this host: split 0 sends a 60 kB JPEG, split 2 is a
# 6 kB bottleneck, split 3 sends more than split 2 (not a candidate), split 4 is local.
BYTES = [60_000, 90_000, 6_000, 9_000, 0]
HOST_MS = [0.0, 2.0, 5.0, 30.0, 40.0]  # cumulative head time on this host
LOCAL = 4  # the split that runs the whole model on the device


def toy_model_profile() -> ModelProfile:
    splits = tuple(
        SplitPoint(
            k=k,
            name=f"b{k}",
            shape=(k + 1,),
            bytes={"int8": b},
            device_ms=HOST_MS[k],
            encode_ms={"int8": 0.2 if k < 4 else 0.0},
            decode_ms={"int8": 0.3 if k < 4 else 0.0},
            agreement={"int8": 1.0} if k < 4 else {},
        )
        for k, b in enumerate(BYTES)
    )
    return ModelProfile(
        model="toy",
        fingerprint="0" * 16,
        n=4,
        codec="int8",
        input_bytes=BYTES[0],
        splits=splits,
        block_ms=(2.0, 3.0, 25.0, 10.0),
        host="test",
        threads=1,
    )


def toy_device(slowdown: float = 4.0) -> DeviceProfile:
    return DeviceProfile.from_model_profile(toy_model_profile(), slowdown=slowdown)


def toy_server() -> ServerProfile:
    return ServerProfile(
        {
            "device": "toy gpu",
            "models": {
                "toy": {
                    "blocks": 4,
                    "tail_ms": {
                        "fp32@1": [4.0, 3.5, 2.0, 1.0, 0.0],
                        "fp32@64": [8.0, 7.0, 4.0, 2.0, 0.0],
                    },
                }
            },
        }
    )
