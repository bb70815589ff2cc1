#!/usr/bin/python3
"""Rank, Reward and RankStream against a running personalizer, from Python.

Uses the stubs generated from proto/ (client/python/personalizer/v1) and
Debian's python3-grpcio. Run: /usr/bin/python3 client/python/example.py --addr 127.0.0.1:50051
"""
import argparse
import sys

import grpc

from personalizer.v1 import personalizer_pb2 as pb
from personalizer.v1 import personalizer_pb2_grpc as pb_grpc


def feature(name, value):
    if isinstance(value, bool):
        return pb.Feature(name=name, bool_value=value)
    if isinstance(value, (int, float)):
        return pb.Feature(name=name, number_value=value)
    return pb.Feature(name=name, string_value=value)


def namespace(name, **features):
    return pb.Namespace(name=name, features=[feature(k, v) for k, v in features.items()])


def request(event_id=None):
    req = pb.RankRequest(
        context_features=[namespace("User", tier="gold", visits=3), namespace("", timeOfDay="morning")],
        actions=[
            pb.Action(id="news", features=[namespace("", type="News", length=0.4)]),
            pb.Action(id="sports", features=[namespace("", type="Sports", length=0.9)]),
            pb.Action(id="music", features=[namespace("", type="Music", live=True)]),
        ],
        excluded_actions=["music"],
    )
    if event_id is not None:
        req.event_id = event_id
    return req


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", default="127.0.0.1:50051")
    args = parser.parse_args()
    with grpc.insecure_channel(args.addr) as channel:
        stub = pb_grpc.PersonalizerServiceStub(channel)

        resp = stub.Rank(request(), timeout=10)
        assert resp.event_id, "no event id"
        assert resp.ranking[0].id == resp.reward_action_id
        probs = {r.id: r.probability for r in resp.ranking}
        assert probs["music"] == 0, "excluded action was given a probability"
        assert abs(sum(probs.values()) - 1) < 1e-6, probs
        print(f"rank: event {resp.event_id} shows {resp.reward_action_id}, ranking {probs}")

        again = stub.Rank(request(resp.event_id), timeout=10)
        assert again.reward_action_id == resp.reward_action_id, "same event id, different answer"

        stub.Reward(pb.RewardRequest(event_id=resp.event_id, value=1.0), timeout=10)
        print(f"reward: 1.0 for event {resp.event_id}")

        try:
            stub.Reward(pb.RewardRequest(event_id=resp.event_id, value=2.0), timeout=10)
            sys.exit("a reward of 2.0 was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            print(f"reward 2.0 refused: {e.details()}")

        ids = [f"py-stream-{i}" for i in range(5)]
        stream = stub.RankStream(iter(pb.RankStreamRequest(request=request(i)) for i in ids), timeout=10)
        got = [r.response.event_id for r in stream]
        assert got == ids, got
        print(f"rank stream: {len(got)} answers in order")
    print("python example: ok")


if __name__ == "__main__":
    main()
