"""Users' files: model files checked before Keras reads them, outputs that are
never half-written and never written onto an input.

    flow = files.load_flow("moons.keras")      # ValueError naming the problem
    loaded = files.load_saved_model("serving/moons/1")   # the same for SavedModels
    with files.atomic_output("s.npy") as tmp:  # refuses an existing file
        np.save(tmp, samples)                  # s.npy appears only when complete
"""

import contextlib
import json
import os
import tempfile
import zipfile

__all__ = ["load_flow", "load_saved_model", "check_output", "atomic_output", "same_file"]

# What Keras 3 writes into every `.keras` archive.
_KERAS_ARCHIVE_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")


def _one_line(err):
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _error_name(err):
    """`BadZipFile`, `zlib.error`: the module is named where the class name
    alone says little."""
    kind = type(err)
    return kind.__name__ if kind.__name__[0].isupper() else f"{kind.__module__}.{kind.__name__}"


def _check_keras_archive(path):
    """The parsed config.json of `path`; raises ValueError unless `path` is a
    whole, uncorrupted `.keras` zip."""
    if not os.path.isfile(path):
        raise ValueError(f"No such model file: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .keras model file: it is not a zip "
                         "archive (truncated or corrupted?)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
            config = (archive.read("config.json") if "config.json" in names
                      and bad is None else None)
    except Exception as err:  # zipfile raises many types on damaged headers
        raise ValueError(f"{path} is a corrupted .keras file ({_error_name(err)}: "
                         f"{_one_line(err)})") from None
    if bad is not None:
        raise ValueError(f"{path} is a corrupted .keras file: its member {bad} is "
                         "damaged (a checksum or header mismatch)")
    missing = [m for m in _KERAS_ARCHIVE_MEMBERS if m not in names]
    if missing:
        raise ValueError(f"{path} is not a .keras model file: it has no "
                         f"{', '.join(missing)}")
    try:
        return json.loads(config)
    except (ValueError, RecursionError) as err:  # bad JSON or UTF-8, too deep
        raise ValueError(f"{path} is a corrupted .keras file: its config.json is not "
                         f"JSON ({_one_line(err)})") from None


def _lambda_holder(config):
    """The class name of the object whose config holds a Python lambda
    (Keras serializes one as `{"class_name": "__lambda__", ...}`), or None."""
    stack = [(config, None)]
    while stack:
        node, holder = stack.pop()
        if isinstance(node, dict):
            name = node.get("class_name")
            if name == "__lambda__":
                return holder or "Keras"
            holder = name if isinstance(name, str) else holder
            stack.extend((value, holder) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, holder) for value in node)
    return None


def load_flow(path, safe_mode=True):
    """Loads a `tfflows.Flow` from a `.keras` file, checked first.

    Raises a `ValueError` that names the file and the problem (missing,
    truncated, corrupted, not a Keras archive, not a Flow, refused by
    `safe_mode`) instead of the zip, HDF5 or deserialization error beneath.

    `safe_mode=True` (Keras' default) refuses a file holding Python code (a
    lambda, e.g. in a `keras.layers.Lambda`): loading it would run that code.
    Pass `safe_mode=False` only for a file you trust.
    """
    import keras

    from tfflows.flow import Flow

    path = os.fspath(path)
    config = _check_keras_archive(path)
    holder = _lambda_holder(config)
    if safe_mode and holder is not None:
        raise ValueError(
            f"{path} holds Python code (a lambda in a {holder} layer), which safe_mode "
            "refuses to run: loading it would run code the file chooses. Load it only "
            "if you trust the file, with tfflows.files.load_flow(path, "
            "safe_mode=False) (the tfflows command always loads safely)")
    try:
        model = keras.models.load_model(path, safe_mode=safe_mode)
    except Exception as err:  # Keras, h5py and zipfile raise many types
        raise ValueError(f"{path}: cannot load the model ({type(err).__name__}: "
                         f"{_one_line(err)})") from err
    if not isinstance(model, Flow):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a tfflows.Flow "
                         "(a model saved by Flow.save or `tfflows train`)")
    return model


def _saved_model_fault(path):
    """Which file of the SavedModel folder `path` is damaged, found by reading
    each in turn (the graph, the variables' index, every variable); None if
    each reads."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        if not proto.meta_graphs:
            return "saved_model.pb"
    except Exception:
        return "saved_model.pb"
    prefix = os.path.join(path, "variables", "variables")
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = list(reader.get_variable_to_shape_map())
    except Exception:
        return os.path.join("variables", "variables.index")
    try:
        for name in names:
            reader.get_tensor(name)
    except Exception:
        shards = sorted(n for n in os.listdir(os.path.dirname(prefix))
                        if n.startswith("variables.data-"))
        return os.path.join("variables", shards[0] if len(shards) == 1
                            else "variables.data-*")
    return None


def load_saved_model(path):
    """Loads a SavedModel folder with `tf.saved_model.load`, checked first.

    Raises a `ValueError` naming the folder and the problem: missing, a
    model base folder (versions inside) instead of a version folder, no
    `saved_model.pb`, missing variable files, or a file truncated or
    corrupted (named), instead of TensorFlow's error beneath.
    """
    import glob
    import re

    import tensorflow as tf

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"No such SavedModel folder: {path}")
    if not os.path.isdir(path):
        raise ValueError(f"{path} is a file, not a SavedModel folder")
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        versions = sorted((n for n in os.listdir(path) if re.fullmatch(r"\d+", n)
                           and os.path.isdir(os.path.join(path, n))), key=int)
        if versions:
            raise ValueError(f"{path} holds model versions ({', '.join(versions)}), not "
                             "a SavedModel: pass a version folder, e.g. "
                             f"{os.path.join(path, versions[-1])}")
        raise ValueError(f"No SavedModel in {path}: it has no saved_model.pb")
    index = os.path.join(path, "variables", "variables.index")
    missing = None
    if not os.path.isfile(index):
        missing = os.path.join("variables", "variables.index")
    else:
        shards = glob.glob(os.path.join(path, "variables", "variables.data-*-of-*"))
        counts = {re.search(r"-of-(\d+)$", n).group(1) for n in shards}
        total = int(counts.pop()) if len(counts) == 1 else 1
        for k in range(total):
            name = f"variables.data-{k:05d}-of-{total:05d}"
            if not os.path.isfile(os.path.join(path, "variables", name)):
                missing = os.path.join("variables", name)
                break
    if missing is not None:
        raise ValueError(f"{path}: the SavedModel is incomplete: {missing} is missing "
                         "(copy the whole folder, or export again)")
    try:
        return tf.saved_model.load(path)
    except Exception as err:  # TensorFlow, protobuf and checkpoint errors
        fault = _saved_model_fault(path)
        if fault is not None:
            raise ValueError(f"{path}: cannot load the SavedModel: {fault} is truncated "
                             "or corrupted (copy the whole folder again, or export "
                             "again)") from err
        detail = _one_line(str(err).splitlines()[0] if str(err) else err)
        raise ValueError(f"{path}: cannot load the SavedModel ({type(err).__name__}: "
                         f"{detail})") from err


def same_file(a, b):
    """Whether two paths name one file (an existing file, or the same path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output(path, overwrite=False, inputs=()):
    """Raises ValueError unless `path` can be written as a new output file.

    The folder must exist; an existing file is refused unless `overwrite`;
    one of `inputs` is always refused.
    """
    path = os.fspath(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise ValueError(f"{path} is also an input: choose another output file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"Cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"Cannot write {path}: folder {folder} is not writable")
    if os.path.isdir(path):
        raise ValueError(f"Cannot write {path}: it is a folder")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"{path} exists; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_output(path, overwrite=False, inputs=()):
    """Yields a temporary path beside `path`, renamed to `path` on success.

    The caller writes the whole file to the yielded path; if the block raises
    (or the process dies), `path` is untouched and the temporary is removed.
    """
    path = os.fspath(path)
    check_output(path, overwrite, inputs)
    folder, name = os.path.split(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=os.path.splitext(name)[1],
                                   dir=folder)
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
