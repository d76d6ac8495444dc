"""The op registry: one KindSpec per op kind (models/kinds/base.py says what each declares), registered
in models.op_value's registry at this package's import (importing any kind's module imports it first).

    from models.op import OpKind, kind_spec
    kind_spec(OpKind.CONV2D).forward_flops(op)          # or op.spec.forward_flops(op), op.forward_flops

A new kind is a module beside these with a KindSpec subclass, registered below, and a builder method in
models.graph.GraphBuilder; nothing in the simulator, the space, the lowering or calibration changes. The
kinds' modules import the operator value from models.op_value, never models.op (which imports this
package).
"""

from models.kinds.activation import ActivationKind
from models.kinds.attend import Attend
from models.kinds.attention import Attention
from models.kinds.batch_norm import BatchNorm
from models.kinds.channel_slice import ChannelSlice
from models.kinds.class_token import ClassToken, FirstToken
from models.kinds.combine import Add, Concat, Multiply
from models.kinds.conv import Conv2D
from models.kinds.dense import Dense
from models.kinds.dropout import Dropout
from models.kinds.embedding import Embedding
from models.kinds.global_pool import GlobalAvgPool, GlobalMaxPool
from models.kinds.group_norm import GroupNorm
from models.kinds.heads import MergeHeads, SplitHeads
from models.kinds.image_tokens import ImageTokens
from models.kinds.layer_norm import LayerNorm
from models.kinds.loss import SoftmaxXent
from models.kinds.pool import AvgPool2D, MaxPool2D
from models.kinds.position import AddPosition
from models.kinds.reshape import Flatten
from models.kinds.token_loss import TokenXent
from models.kinds.token_type import AddTokenType
from models.op_value import OpKind, register, registered_kinds

for _spec in (Conv2D(), MaxPool2D(), AvgPool2D(), GlobalAvgPool(), BatchNorm(), Add(), Concat(), Flatten(), Dense(),
              SoftmaxXent(), LayerNorm(), Embedding(), AddPosition(), Attention(), SplitHeads(), MergeHeads(),
              ActivationKind(), Multiply(), Dropout(), TokenXent(), Attend(), ImageTokens(), ClassToken(),
              FirstToken(), AddTokenType(), GroupNorm(), GlobalMaxPool(), ChannelSlice()):
    register(_spec)

assert registered_kinds() == set(OpKind), set(OpKind) - registered_kinds()
