"""Methods by name. Each entry is ``"module:Class"``, imported only when chosen (trl loads only for its methods)."""

from bench.core.registry import Registry

METHODS = Registry(
    "method",
    {
        "alignprop": "methods.alignprop:AlignProp",
        "alignprop-full": "methods.alignprop:AlignPropFull",
        "alignprop-k1": "methods.alignprop:AlignPropK1",
        "rwr": "methods.rwr:RWR",
        "rwr-sparse": "methods.rwr:RWRSparse",
        "ddpo": "methods.ddpo:DDPO",
        "alignprop-trl": "methods.alignprop_trl:AlignPropTrl",
        "draft-lv": "methods.draft_lv:DraftLV",
        # DRaFT-K is exactly AlignProp's last-K truncation (same sampler gradient mode): the same class, K = 1 by
        # default, any K with --set draft-k.k=K
        "draft-k": "methods.alignprop:AlignPropK1",
        "refl": "methods.refl:ReFL",
        "grpo": "methods.grpo:GRPO",
        "grpo-kl": "methods.grpo:GRPOKL",  # GRPO with Flow-GRPO's KL to the base model (beta 0.04)
        # the flow policy gradients (sd3 family): stochastic flow SDEs on the shared sampler's flow chain
        "flow-grpo": "methods.flow_grpo:FlowGRPO",
        "flow-grpo-cps": "methods.flow_grpo:FlowGRPOCPS",  # flow-grpo with the CPS SDE (flow-grpo --set sde=cps)
        "flow-grpo-guard": "methods.grpo_guard:FlowGRPOGuard",  # flow-grpo + GRPO-Guard's RatioNorm and 1/|dt|
        "dance-grpo": "methods.dance_grpo:DanceGRPO",
        "mixgrpo": "methods.mixgrpo:MixGRPO",
        "diffusion-nft": "methods.diffusion_nft:DiffusionNFT",
        "awm": "methods.awm:AWM",
        # memoryless stochastic optimal control on both families (DDIM eta 1; the memoryless flow SDE)
        "adjoint-matching": "methods.adjoint_matching:AdjointMatching",
    },
    plugins=True,  # --methods my_module:MyMethod or path/to/file.py:MyMethod (a methods.base.Method subclass)
)
