"""RedNet builders."""

from .rednet import (Bottleneck, ClsHead, RedNet, RedNetBackbone, rednet, rednet26, rednet38, rednet50, rednet101,
                     rednet152)

__all__ = ["Bottleneck", "ClsHead", "RedNet", "RedNetBackbone", "rednet", "rednet26", "rednet38", "rednet50",
           "rednet101", "rednet152"]
