#!/bin/sh
echo "$MESSAGE from $(id -u):$(id -g) with $*"
