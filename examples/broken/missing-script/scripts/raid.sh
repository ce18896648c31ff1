#!/bin/sh
echo "{\"raid\": \"ok\"}"
