#!/bin/sh
cat /app/mode.txt /app/size.txt
