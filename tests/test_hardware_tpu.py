"""TPU targets: torus slices cut to a run's size, the MaxText stack's sharding and remat policies, and the
public MaxText cases predicted on them."""
from pathlib import Path

import pytest

from watos.errors import WatosError
from watos.hardware.stack import Features, load_stack
from watos.hardware.target import load_target
from watos.network.topology import network_of
from watos.validation.cases import load_cases
from watos.validation.predict import predict, sized_for

# The checkout (and CI's clone) may have shared/ beside it; the cases test skips without it.
CASES = Path(__file__).parents[2] / "shared" / "validation" / "public_v2.json"


def test_a_v5p_slice_is_a_3d_torus_with_six_links_per_chip():
    """1200 GB/s of bidirectional ICI per chip over six links: 100 GB/s per link and direction."""
    target = load_target("tpu-v5p").sliced(128)
    net = network_of(target)
    assert net.shape == (4, 4, 8) and net.wrap and target.dies == 128
    assert net.graph.out_degree(0) == 6
    rate = sum(net.rate(e) for e in net.graph.out_edges(0)) / target.device.efficiency.network
    assert 2 * rate == pytest.approx(1200e9)


def test_slices_take_their_shape_and_a_data_centre_network():
    target = load_target("tpu-v5p").sliced(64, slices=2, shape=[4, 4, 4])
    assert target.wafers == 2 and target.dies == 128
    with pytest.raises(WatosError, match="no slice shape for 96 chips"):
        load_target("tpu-v5p").sliced(96)
    with pytest.raises(WatosError, match="only a torus"):
        load_target("watos-config3").sliced(56)


def test_maxtext_remat_policies_name_what_selective_recompute_reruns():
    stack = load_stack("maxtext")
    assert stack.tp_shards_activations
    assert stack.resolve(Features(remat_policy="minimal")).recompute_modules == ("core_attn", "layernorm", "mlp_act")
    with pytest.raises(WatosError, match="no remat policy 'offload'"):
        stack.resolve(Features(remat_policy="offload"))


@pytest.mark.skipif(not CASES.exists(), reason="shared/validation/public_v2.json not beside the checkout")
def test_the_public_tpu_cases_are_available_and_cut_to_their_slices():
    cases = [c for c in load_cases(CASES) if c.system.target.startswith("tpu")]
    assert {c.system.target for c in cases} == {"tpu-v5p", "tpu-v5e"}
    two = next(c for c in cases if c.system.topology and c.system.topology.slices == 2)
    assert sized_for(load_target("tpu-v5p"), two).wafers == 2
    v5e = next(c for c in cases if c.system.target == "tpu-v5e")
    result = predict(v5e)
    assert result["status"] == "predicted" and abs(result["error"]) < 0.15
