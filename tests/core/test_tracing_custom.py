"""`--arch path/to/model.py:factory`: import, strict load, trace, self-test, honest refusals."""

from __future__ import annotations

import textwrap

import pytest
import torch

from core.architectures import resolve_architecture
from core.errors import MergerError

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
            return self.fc(torch.flatten(x, 1))

    def make():
        return Net()

    def make_cat():
        return Cat()

    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 2)
            self.b = nn.Linear(4, 2)
            self.out = nn.Linear(4, 1)
            self.example_input = torch.randn(2, 4)

        def forward(self, x):
            return self.out(torch.cat([self.a(x), self.b(x)], 1))

    example_input = torch.randn(2, 1, 4, 4)
    """
)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL_FILE)
    return path


def _state(path, factory="make"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fixture_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net = getattr(module, factory)()
    for name, value in net.state_dict().items():
        if name.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    return dict(net.state_dict()), net.eval()


def test_user_module_is_traced_self_tested_and_buildable(model_file):
    state, original = _state(model_file)
    arch = resolve_architecture(f"{model_file}:make", state)
    assert arch.name == "model.py:make"
    assert arch.input_shape == (1, 4, 4)
    assert set(arch.spec.groups) == {"P_conv"}
    assert arch.spec.blocks == {("fc.weight", 1): 4}
    assert ("bn.running_mean", 0) in arch.spec.groups["P_conv"]
    x = torch.randn(3, 1, 4, 4)
    assert torch.allclose(arch.build(state)(x), original(x))
    permuted = arch.spec.apply(state, arch.spec.random(1))
    assert torch.allclose(arch.build(permuted)(x), original(x), atol=1e-6)


def test_unsupported_op_in_a_user_module_is_named(model_file):
    state, _ = _state(model_file, "make_cat")
    with pytest.raises(MergerError, match=r"function cat \(graph node 'cat'\)") as info:
        resolve_architecture(f"{model_file}:make_cat", state, source="cat0.pt")
    assert str(info.value.file) == str(model_file)  # the code to change, not the checkpoint


def test_example_input_that_does_not_fit_is_explained(model_file):
    state, _ = _state(model_file)
    path = model_file.with_name("wrong.py")
    path.write_text(MODEL_FILE.replace("torch.randn(2, 1, 4, 4)", "torch.randn(2, 3, 4, 4)"))
    with pytest.raises(MergerError, match=r"example input of shape \[2, 3, 4, 4\]"):
        resolve_architecture(f"{path}:make", state)


def test_missing_factory_lists_what_the_file_has(model_file):
    state, _ = _state(model_file)
    with pytest.raises(MergerError) as info:
        resolve_architecture(f"{model_file}:build", state)
    assert "no function 'build'" in str(info.value) and "make" in str(info.value)
    assert str(model_file) in str(info.value)


def test_checkpoint_that_does_not_load_is_refused(model_file):
    state, _ = _state(model_file)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(MergerError, match="does not load into the model"):
        resolve_architecture(f"{model_file}:make", state)


def test_a_long_list_of_strangers_is_cut_short(model_file):
    """torch lists every missing and unexpected name on one line; we show three and count."""
    state, _ = _state(model_file)
    state = {f"other.{i}.weight": torch.zeros(1) for i in range(12)} | {"fc.bias": state["fc.bias"]}
    with pytest.raises(MergerError) as info:
        resolve_architecture(f"{model_file}:make", state)
    text = str(info.value)
    assert (
        "tensor(s) the model has are missing (bn.bias, bn.num_batches_tracked, bn.running_mean, … and"
        in text
    )
    assert (
        "12 are not in the model (other.0.weight, other.1.weight, other.2.weight, … and 9 more)"
        in text
    )
    assert "other.11" not in text


def test_missing_file_and_failing_import(tmp_path):
    with pytest.raises(MergerError, match="no such model file"):
        resolve_architecture(f"{tmp_path}/absent.py:make", {})
    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('boom')\n")
    with pytest.raises(MergerError, match="importing it failed: ValueError: boom"):
        resolve_architecture(f"{bad}:make", {})


def test_a_script_that_exits_is_an_error_not_an_exit(tmp_path):
    """sys.exit() in the user's file or factory (a script's habit) must not end merger
    silently with the script's exit code."""
    top = tmp_path / "top.py"
    top.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(MergerError, match="importing it failed: SystemExit: 3"):
        resolve_architecture(f"{top}:make", {})
    inner = tmp_path / "inner.py"
    inner.write_text("import sys\ndef make():\n    sys.exit('no model here')\n")
    with pytest.raises(MergerError, match=r"make\(\) failed: SystemExit: no model here"):
        resolve_architecture(f"{inner}:make", {})


def test_code_references_can_be_refused(model_file):
    state, _ = _state(model_file)
    with pytest.raises(MergerError, match="would import and run that Python file"):
        resolve_architecture(f"{model_file}:make", state, allow_code=False)


FLAT_INPUT_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class FlatToImage(nn.Module):
        '''Takes digits as 64 features and views them as 8x8 images, as users' models do.'''

        def __init__(self, how):
            super().__init__()
            self.how = how
            self.unflatten = nn.Unflatten(1, (1, 8, 8))
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            self.bn = nn.BatchNorm2d(6)
            self.hidden = nn.Linear(6 * 4 * 4, 12)
            self.out = nn.Linear(12, 10)

        def forward(self, x):
            if self.how == "view":
                x = x.view(-1, 1, 8, 8)
            elif self.how == "reshape":
                x = x.reshape(x.shape[0], 1, 8, 8)
            else:
                x = self.unflatten(x)
            x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
            return self.out(torch.relu(self.hidden(torch.flatten(x, 1))))

    def by_view():
        return FlatToImage("view")

    def by_reshape():
        return FlatToImage("reshape")

    def by_unflatten():
        return FlatToImage("unflatten")

    example_input = torch.randn(2, 64)
    """
)


@pytest.mark.parametrize("factory", ["by_view", "by_reshape", "by_unflatten"])
def test_a_flat_input_viewed_as_an_image_is_traced(tmp_path, factory):
    """Reshaping the network's own input is harmless (its axes are never permuted): the
    spec permutes the conv's channels and the hidden units, and passes the self-test."""
    path = tmp_path / "flat.py"
    path.write_text(FLAT_INPUT_FILE)
    state, original = _state(path, factory)
    arch = resolve_architecture(f"{path}:{factory}", state)
    assert set(arch.spec.groups) == {"P_conv", "P_hidden"}
    assert arch.spec.blocks == {("hidden.weight", 1): 16}
    assert arch.input_shape == (64,)
    x = torch.randn(5, 64)
    permuted = arch.spec.apply(state, arch.spec.random(3))
    assert torch.allclose(arch.build(permuted)(x), original(x), atol=1e-5)


def test_a_reshape_that_mixes_hidden_units_is_still_refused(tmp_path):
    path = tmp_path / "mix.py"
    path.write_text(
        FLAT_INPUT_FILE.replace(
            "return self.out(torch.relu(self.hidden(torch.flatten(x, 1))))",
            "return self.out(torch.relu(self.hidden(x.reshape(x.shape[0], 16, 6).flatten(1))))",
        )
    )
    state, _ = _state(path, "by_view")
    with pytest.raises(MergerError, match=r"a reshape from \[2, 6, 4, 4\] to \[2, 16, 6\]"):
        resolve_architecture(f"{path}:by_view", state)


def test_a_guessed_input_shape_is_named_when_tracing_fails(tmp_path):
    path = tmp_path / "guess.py"
    path.write_text(FLAT_INPUT_FILE.replace("example_input = torch.randn(2, 64)", ""))
    state, _ = _state(path, "by_view")
    with pytest.raises(MergerError) as info:
        resolve_architecture(f"{path}:by_view", state)
    assert "[2, 1, 32, 32] was guessed" in str(info.value)
    assert "example_input" in str(info.value) and "guess.py" in str(info.value)


def test_a_model_file_imports_its_neighbours_and_evaluation_needs_no_trace(tmp_path):
    """`from nets import Net` works next to the file (as when run as a script), and a
    model the tracer refuses (torch.cat) still builds for evaluation."""
    (tmp_path / "nets_neighbour.py").write_text(MODEL_FILE)
    path = tmp_path / "entry.py"
    path.write_text("from nets_neighbour import Cat\n\ndef make():\n    return Cat()\n")
    state, original = _state(tmp_path / "nets_neighbour.py", "make_cat")
    with pytest.raises(MergerError, match="function cat"):
        resolve_architecture(f"{path}:make", state)
    arch = resolve_architecture(f"{path}:make", state, need_spec=False)
    assert arch.spec.groups == {}
    x = torch.randn(3, 4)
    assert torch.allclose(arch.build(state)(x), original(x))
    assert str(tmp_path) not in __import__("sys").path  # the folder is not left behind


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import torch\ndef net():\n    return torch.nn.Linear(2, 2)\n", "net"),
        ("def helper(x):\n    return x\ndef make_net():\n    pass\n", "make_net"),
        ("def a():\n    pass\ndef b():\n    pass\n", "a"),
        ("def _private():\n    pass\nclass Net:\n    pass\n", None),
        ("def broken(:\n", None),
    ],
)
def test_the_factory_is_guessed_from_the_file_without_running_it(tmp_path, source, expected):
    from core.architectures.custom import guess_factory

    path = tmp_path / "model.py"
    path.write_text(source + "raise SystemExit('ran!')\n" if "broken" not in source else source)
    assert guess_factory(path) == expected


def test_an_unsupported_operation_is_not_blamed_on_a_guessed_input_shape(tmp_path):
    path = tmp_path / "odd.py"
    path.write_text(
        "import torch\nfrom torch import nn\n"
        "class Odd(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a = nn.Linear(8, 16)\n"
        "        self.b = nn.Linear(16, 4)\n"
        "    def forward(self, x):\n"
        "        return self.b(torch.cumsum(self.a(x), dim=1))\n"
        "def odd():\n    return Odd()\n"
    )
    torch.manual_seed(0)
    state = {"a.weight": torch.randn(16, 8), "a.bias": torch.zeros(16)}
    state |= {"b.weight": torch.randn(4, 16), "b.bias": torch.zeros(4)}
    with pytest.raises(MergerError) as info:
        resolve_architecture(f"{path}:odd", state)
    assert "cumsum" in str(info.value) and "was guessed" not in str(info.value)


def test_the_data_shapes_the_tracing_input_when_the_file_does_not(tmp_path):
    """A conv net that unflattens the digits' 64 values itself: the first-layer guess
    (1×32×32 images) cannot run it, the data's own example shape can."""
    path = tmp_path / "flat_cnn.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(1, 4, 3, padding=1)
                    self.fc = nn.Linear(4 * 8 * 8, 10)

                def forward(self, x):
                    x = torch.relu(self.conv(x.view(-1, 1, 8, 8)))
                    return self.fc(torch.flatten(x, 1))

            def make():
                return Net()
            """
        )
    )
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in _load_net(path).state_dict().items()}
    with pytest.raises(MergerError, match=r"guessed from the model's first layer"):
        resolve_architecture(f"{path}:make", state)
    arch = resolve_architecture(f"{path}:make", state, input_shape=(64,))
    assert arch.input_shape == (64,)
    assert set(arch.spec.groups) == {"P_conv"}


def _load_net(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("flat_cnn_for_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make()


def test_tied_weights_that_break_the_self_test_are_named(tmp_path):
    """Two layers sharing one weight cannot be permuted apart: the refusal names them."""
    path = tmp_path / "tied.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Tied(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a, self.b, self.c = nn.Linear(6, 5), nn.Linear(5, 5), nn.Linear(5, 5)
                    self.c.weight = self.b.weight
                    self.out = nn.Linear(5, 2)

                def forward(self, x):
                    x = torch.relu(self.b(torch.relu(self.a(x))))
                    return self.out(torch.relu(self.c(x)))

            def make():
                return Tied()
            """
        )
    )
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in _load_net(path).state_dict().items()}
    for shape in ((6,), None):  # the data's shape or a guessed one: the tie is the cause
        with pytest.raises(MergerError) as info:
            resolve_architecture(f"{path}:make", state, input_shape=shape)
        assert "b.weight and c.weight are one tensor (tied weights)" in str(info.value)


def test_flat_data_for_an_image_model_and_a_factory_with_arguments_say_what_to_do(tmp_path):
    """The data's example shape is named as the data's (digits are flat: reshape them),
    and a factory that wants arguments is told it is called with none."""
    path = tmp_path / "convnet.py"
    path.write_text(
        textwrap.dedent(
            """
            from torch import nn

            def make():
                return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(4 * 6 * 6, 10))

            def sized(width, depth):
                return make()
            """
        )
    )
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in _load_net(path).state_dict().items()}
    with pytest.raises(MergerError) as info:
        resolve_architecture(f"{path}:make", state, input_shape=(64,))
    assert "the shape [64] is the data's examples'" in str(info.value)
    assert "x.reshape(-1, 1, 8, 8)" in str(info.value)
    with pytest.raises(MergerError, match=r"called with no arguments: add one to convnet\.py"):
        resolve_architecture(f"{path}:sized", state)


def test_a_model_whose_names_carry_a_wrappers_prefix_loads_a_checkpoint_read_without_it(
    tmp_path,
):
    """Checkpoints lose a `module.` prefix on every name when read; a user's model whose
    one child is called `module` still gets its weights, and its spec names the
    checkpoint's tensors."""
    from safetensors.torch import save_file

    from core.checkpoints import open_checkpoint

    (tmp_path / "net.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.module = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))

                def forward(self, x):
                    return self.module(x)

            def make():
                return Net()
            """
        )
    )
    torch.manual_seed(0)
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("net_for_test", tmp_path / "net.py")
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    net = mod.make()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    with open_checkpoint(tmp_path / "w.safetensors") as ck:
        state = {k: ck.get(k) for k in ck.keys()}
    assert sorted(state) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    arch = resolve_architecture(f"{tmp_path / 'net.py'}:make", state)
    assert set(arch.spec.tensors) == {"0.weight", "0.bias", "2.weight"}  # the hidden units
    assert any("carry 'module.'" in n for n in arch.notes)
    x = torch.randn(4, 6)
    built = arch.build(state)
    assert torch.allclose(built(x), net(x))
    assert sorted(built.state_dict()) == sorted(state)  # read back (BatchNorm) as given
    assert arch.spec.self_test(arch.build, state, x) < 1e-9
