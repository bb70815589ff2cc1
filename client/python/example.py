#!/usr/bin/python3
"""Rank, Reward and RankStream against a running personalizer, from Python,
then MultiSlotRank and MultiSlotReward on a multi-slot loop it makes.

Uses the stubs generated from proto/ (client/python/personalizer/v1) and
Debian's python3-grpcio. Run: /usr/bin/python3 client/python/example.py --addr 127.0.0.1:50051
"""
import argparse
import sys

import grpc

from personalizer.v1 import admin_pb2
from personalizer.v1 import admin_pb2_grpc
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


# A loop's problem type is its policy's, fixed when the loop is made:
# --ccb_explore_adf makes it multi-slot.
MULTI_SLOT_POLICY = "--ccb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"


def multi_slot_request(event_id=None):
    req = pb.MultiSlotRankRequest(
        context_features=[namespace("User", tier="gold", visits=3)],
        actions=[pb.Action(id=t.lower(), features=[namespace("", type=t)]) for t in ("News", "Sports", "Music", "Film", "Radio")],
        slots=[
            pb.Slot(id="hero", baseline_action="news", features=[namespace("", size="large")]),
            pb.Slot(id="side", baseline_action="sports", excluded_actions=["news", "radio"], features=[namespace("", size="small")]),
            pb.Slot(id="footer", baseline_action="film", excluded_actions=["music"]),
        ],
    )
    if event_id is not None:
        req.event_id = event_id
    return req


def check_slots(req, resp):
    """Every slot answered, in order, with an action no earlier slot took and it does not exclude."""
    assert [s.id for s in resp.slots] == [s.id for s in req.slots], resp
    taken = set()
    for slot, got in zip(req.slots, resp.slots):
        a = got.reward_action_id
        assert a and a not in taken, f"slot {got.id}: {a!r} again or none ({taken})"
        assert a not in slot.excluded_actions, f"slot {got.id} got its excluded action {a}"
        taken.add(a)


def multi_slot(channel, loop):
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    try:
        admin.CreateLoop(admin_pb2.CreateLoopRequest(loop=loop, policy=admin_pb2.Policy(name="multi-slot", arguments=MULTI_SLOT_POLICY)), timeout=10)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    stub = pb_grpc.PersonalizerServiceStub(channel)
    md = (("x-personalizer-loop", loop),)
    try:
        for _ in range(10):
            req = multi_slot_request()
            resp = stub.MultiSlotRank(req, timeout=10, metadata=md)
            check_slots(req, resp)
        print(f"multi-slot rank: event {resp.event_id} fills " + ", ".join(f"{s.id}={s.reward_action_id}" for s in resp.slots))

        again = stub.MultiSlotRank(multi_slot_request(resp.event_id), timeout=10, metadata=md)
        assert again.slots == resp.slots, "same event id, different answer"

        rewards = [pb.SlotReward(slot_id="hero", value=1.0), pb.SlotReward(slot_id="side", value=0.5)]
        stub.MultiSlotReward(pb.MultiSlotRewardRequest(event_id=resp.event_id, rewards=rewards), timeout=10, metadata=md)
        print(f"multi-slot reward: hero 1.0, side 0.5 for event {resp.event_id}")

        bad = multi_slot_request()
        del bad.slots[:]
        try:
            stub.MultiSlotRank(bad, timeout=10, metadata=md)
            sys.exit("a multi-slot rank without slots was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            print(f"no slots refused: {e.details()}")
        try:
            stub.MultiSlotRank(multi_slot_request(), timeout=10)
            sys.exit("the single-slot loop answered a multi-slot rank")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
            print(f"multi-slot rank on the single-slot loop refused: {e.details()}")
    finally:
        admin.DeleteLoop(admin_pb2.DeleteLoopRequest(loop=loop), timeout=10)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--multislot-loop", default="py-carousel", help="the multi-slot loop to make, use and delete")
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

        multi_slot(channel, args.multislot_loop)
    print("python example: ok")


if __name__ == "__main__":
    main()
