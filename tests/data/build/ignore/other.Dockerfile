FROM busybox
COPY . /ctx/
CMD ["find", "/ctx"]
