#!/usr/bin/env python3
"""Load plugins built wrong on purpose and check gatestream refuses each one properly.

For every case this writes a config in a fresh temporary folder that loads the case's
shared object with `path:`, then runs `gatestream --check-config FILE` and
`gatestream --config FILE`. A refusal must:
  - exit with status exactly 2 (not a signal, not a crash, not a hang),
  - write exactly one non-empty line to stderr, of the form
    "gatestream: plugin 'probe' (<file>): <problem>. Fix: <fix>",
  - name the .so path and the specific problem.
The control plugins must pass --check-config with status 0.

Usage: run_abi_tests.py --gatestream BIN --plugin-dir DIR --abi MAJOR.MINOR
Prints one line per check and a final "N passed, M failed"; exits 1 on any failure.
Python 3 standard library only.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

TIMEOUT_S = 30  # per gatestream run; a hang is a failure, never a wait without end
INSTANCE = "probe"


def cases(abi_major, abi_minor):
    """(name, file name or None, kind in YAML, expect refusal, phrases).

    Each phrase must appear in the refusal line (case-insensitive); a tuple means any one
    of its alternatives.
    """
    host = f"{abi_major}.{abi_minor}"
    return [
        ("good", "abi_good.so", "hook", False, []),
        ("good_relative_path", "abi_good.so", "hook", False, []),
        ("old_major", "abi_old_major.so", "hook", True, ["ABI 0.", host]),
        ("newer_minor", "abi_newer_minor.so", "hook", True,
         [f"ABI {abi_major}.{abi_minor + 5}", host]),
        ("short_vtable", "abi_short_vtable.so", "hook", True, ["vtable", "8 bytes"]),
        ("missing_create", "abi_missing_create.so", "hook", True, ["'create'", "callback"]),
        ("bad_signature", "abi_bad_signature.so", "hook", True, ["signature"]),
        ("kind_mismatch", "abi_kind_mismatch.so", "hook", True,
         ["client_transport", "kind", "'hook'"]),
        ("no_entry", "abi_no_entry.so", "hook", True, ["gs_plugin_entry"]),
        ("entry_null", "abi_entry_null.so", "hook", True,
         ["gs_plugin_entry", ("null", "no descriptor")]),
        ("null_vtable", "abi_null_vtable.so", "hook", True, ["vtable"]),
        ("short_descriptor", "abi_short_descriptor.so", "hook", True,
         ["descriptor", "8 bytes"]),
        ("short_config_key", "abi_short_config_key.so", "hook", True, ["config key"]),
        ("missing_file", None, "hook", True, [("not found", "no such file")]),
        ("not_elf", None, "hook", True, ["ELF"]),
    ]


def write_config(case_dir, so_ref, kind, good):
    data_dir = os.path.join(case_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    plugin_config = "{ greeting: hi }" if good else "{}"
    text = (
        "node: { id: abi-test, data_dir: '%s' }\n"
        "plugins:\n"
        "  - name: %s\n"
        "    plugin: abi_test\n"
        "    kind: %s\n"
        "    path: '%s'\n"
        "    config: %s\n"
        "server: { host: 127.0.0.1, port: 0 }\n"
        "databases:\n"
        "  - id: main\n" % (data_dir, INSTANCE, kind, so_ref, plugin_config)
    )
    path = os.path.join(case_dir, "gatestream.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def run(gatestream, args, cwd):
    """(returncode, stdout, stderr, timed_out). Kills the child by its pid on timeout."""
    proc = subprocess.Popen([gatestream] + args, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
        return proc.returncode, out, err, False
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        return proc.returncode, out, err, True


def check_refusal(rc, err, timed_out, so_path, phrases):
    """A list of problems with a refusal (empty when it is right)."""
    problems = []
    if timed_out:
        return [f"did not exit within {TIMEOUT_S} s (killed)"]
    if rc < 0:
        problems.append(f"killed by signal {-rc}")
    elif rc != 2:
        problems.append(f"exit status {rc}, expected 2")
    lines = err.splitlines()
    if len(lines) != 1 or not lines[0].strip():
        problems.append(f"stderr has {len(lines)} lines, expected exactly one non-empty line")
        return problems
    line = lines[0]
    low = line.lower()
    if not line.startswith("gatestream: "):
        problems.append("the line does not start with 'gatestream: '")
    if f"plugin '{INSTANCE}'" not in line:
        problems.append(f"the line does not name the instance ('{INSTANCE}')")
    if so_path not in line:
        problems.append(f"the line does not name the file {so_path}")
    if "Fix:" not in line:
        problems.append("the line has no 'Fix:'")
    for phrase in phrases:
        alternatives = phrase if isinstance(phrase, tuple) else (phrase,)
        if not any(a.lower() in low for a in alternatives):
            problems.append("the line does not say " + " or ".join(repr(a) for a in alternatives))
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gatestream", required=True, help="the gatestream binary")
    ap.add_argument("--plugin-dir", required=True, help="folder holding abi_*.so")
    ap.add_argument("--abi", required=True, help="the headers' ABI, MAJOR.MINOR")
    args = ap.parse_args()
    abi_major, abi_minor = (int(x) for x in args.abi.split("."))
    gatestream = os.path.abspath(args.gatestream)
    plugin_dir = os.path.abspath(args.plugin_dir)

    passed = failed = 0

    def report(ok, label, details):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok   {label}")
        else:
            failed += 1
            print(f"FAIL {label}")
            for d in details:
                print(f"       {d}")
        sys.stdout.flush()

    root = tempfile.mkdtemp(prefix="gs-abi-")
    try:
        for name, so_file, kind, refused, phrases in cases(abi_major, abi_minor):
            case_dir = os.path.join(root, name)
            os.makedirs(case_dir)
            if name == "missing_file":
                so_path = os.path.join(case_dir, "gs_hook_absent.so")
                so_ref = so_path
            elif name == "not_elf":
                so_path = os.path.join(case_dir, "gs_hook_text.so")
                with open(so_path, "w", encoding="utf-8") as f:
                    f.write("this is a text file named like a plugin, not an ELF object\n" * 4)
                so_ref = so_path
            elif name == "good_relative_path":
                # A relative path resolves against the config file's folder, not the cwd.
                os.makedirs(os.path.join(case_dir, "lib"))
                so_path = os.path.join(case_dir, "lib", so_file)
                shutil.copy(os.path.join(plugin_dir, so_file), so_path)
                so_ref = "./lib/" + so_file
            else:
                so_path = os.path.join(plugin_dir, so_file)
                so_ref = so_path
                if not os.path.exists(so_path):
                    report(False, name, [f"{so_path} was not built"])
                    continue
            cfg = write_config(case_dir, so_ref, kind, not refused)
            # Run from the temp root so a relative path cannot resolve against the cwd.
            modes = [["--check-config", cfg]]
            if refused:
                modes.append(["--config", cfg])
            for mode in modes:
                label = f"{mode[0]:<14} {name}"
                rc, out, err, timed_out = run(gatestream, mode, root)
                if refused:
                    problems = check_refusal(rc, err, timed_out, so_path, phrases)
                else:
                    problems = []
                    if timed_out:
                        problems.append(f"did not exit within {TIMEOUT_S} s (killed)")
                    elif rc != 0:
                        problems.append(f"exit status {rc}, expected 0")
                if problems:
                    problems.append("stderr: " + (err.strip().replace("\n", "\n               ")
                                                  or "(empty)"))
                report(not problems, label, problems)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
