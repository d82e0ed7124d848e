#!/bin/sh
# Print the interpreter for the project venvs: the Lambda runtime's Python (3.12) when this
# machine has it (on PATH or under pyenv), else the default python3 (3.11 works too).
want="${LAMBDA_PYTHON:-3.12}"
if command -v "python$want" >/dev/null 2>&1 && "python$want" -c 'import sys' >/dev/null 2>&1; then
  command -v "python$want"; exit 0
fi
if command -v pyenv >/dev/null 2>&1; then
  root="$(pyenv root)"
  for v in $(pyenv versions --bare 2>/dev/null | grep -E "^${want}(\.|$)" | sort -t. -k3 -n -r); do
    if [ -x "$root/versions/$v/bin/python$want" ]; then echo "$root/versions/$v/bin/python$want"; exit 0; fi
  done
fi
command -v python3
