#!/bin/sh
# A first live response script: prints who and where it runs, and leaves a
# file in the working folder for a later GetFile.
echo "hello ${1:-world} from $(hostname)"
echo "running as $(id -un) in $(pwd)"
uname -a > system-info.txt
echo "wrote $(pwd)/system-info.txt"
