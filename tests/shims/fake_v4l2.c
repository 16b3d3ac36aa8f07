/*
 * A fake V4L2 camera at the system-call level, for tests: preloaded (LD_PRELOAD) into a dermedge
 * built with the `camera` feature, it answers open/ioctl/mmap/poll/close for one device path, so
 * that the real `v4l` crate code runs unchanged against frames read from files.
 *
 * Settings (environment):
 *   FAKE_V4L2_DEVICE   the fake device path, e.g. /dev/video77 (nothing else is touched)
 *   FAKE_V4L2_FORMAT   MJPG, YUYV or GREY: the pixel format the device delivers
 *   FAKE_V4L2_FRAMES   an MJPEG stream (concatenated JPEGs) or raw YUYV frames, served in a loop
 *   FAKE_V4L2_WIDTH, FAKE_V4L2_HEIGHT   the one frame size offered
 *   FAKE_V4L2_FAULTS   comma-separated KIND@N, N counting dequeues from 1 over the process:
 *                        unplug@N  DQBUF fails with ENODEV; the device is gone for
 *                                  FAKE_V4L2_UNPLUG_MS (default 300) ms, opens fail with ENOENT
 *                        eio@N     DQBUF fails with EIO once
 *                        stall@N   poll times out from then on, until the device is reopened
 *                        short@N   the frame's bytesused is cut to 60%
 *                        refuse-format   ENUM_FMT lists MJPG and YUYV, but S_FMT keeps
 *                                        FAKE_V4L2_FORMAT whatever is asked
 *   FAKE_V4L2_LOG      a file that gets one line per event (open, fault, ...) for the test to read
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_BUFFERS 8
#define MAX_FRAMES 64

struct buffer {
    void *memory;
    size_t length;
    int queued;
};

static struct {
    int ready;
    const char *device;
    uint32_t pixelformat;
    uint32_t width, height;
    unsigned char *frames[MAX_FRAMES];
    size_t frame_sizes[MAX_FRAMES];
    int frame_count;
    size_t max_frame;
    int unplug_at, eio_at, stall_at, short_at, refuse_format;
    long unplug_ms;
    /* state */
    int fd;                /* the open fake descriptor, or -1 */
    int streaming;
    int stalled;
    int unplugged_fd;      /* the descriptor that saw the unplug */
    struct timespec gone_until;
    long dequeues;
    long next_frame;
    uint32_t sequence;
    struct buffer buffers[MAX_BUFFERS];
    uint32_t buffer_count;
} cam = {.fd = -1, .unplugged_fd = -1};

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_close)(int);
static int (*real_poll)(struct pollfd *, nfds_t, int);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off_t);
static long (*real_syscall)(long, ...);
static int (*real_ioctl)(int, unsigned long, ...);

static void log_event(const char *format, ...) {
    const char *path = getenv("FAKE_V4L2_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    va_list args;
    va_start(args, format);
    vfprintf(f, format, args);
    va_end(args);
    fputc('\n', f);
    fclose(f);
}

static int fault_at(const char *faults, const char *kind) {
    if (!faults) return 0;
    size_t n = strlen(kind);
    for (const char *p = faults; (p = strstr(p, kind)); p += n) {
        if ((p == faults || p[-1] == ',') && p[n] == '@') return atoi(p + n + 1);
    }
    return 0;
}

static size_t next_frame_end(const unsigned char *data, size_t size, size_t start) {
    for (size_t i = start + 2; i + 1 < size; i++) {
        if (data[i] == 0xFF && data[i + 1] == 0xD9 &&
            (i + 2 == size || (i + 3 < size && data[i + 2] == 0xFF && data[i + 3] == 0xD8)))
            return i + 2;
    }
    return size;
}

static void setup(void) {
    if (cam.ready) return;
    cam.ready = 1;
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_poll = dlsym(RTLD_NEXT, "poll");
    real_mmap = dlsym(RTLD_NEXT, "mmap");
    real_mmap64 = dlsym(RTLD_NEXT, "mmap64");
    real_syscall = dlsym(RTLD_NEXT, "syscall");
    real_ioctl = dlsym(RTLD_NEXT, "ioctl");
    cam.device = getenv("FAKE_V4L2_DEVICE");
    const char *format = getenv("FAKE_V4L2_FORMAT");
    cam.pixelformat = !format                     ? V4L2_PIX_FMT_MJPEG
                      : strcmp(format, "YUYV") == 0 ? V4L2_PIX_FMT_YUYV
                      : strcmp(format, "GREY") == 0 ? V4L2_PIX_FMT_GREY
                                                    : V4L2_PIX_FMT_MJPEG;
    cam.width = getenv("FAKE_V4L2_WIDTH") ? (uint32_t)atoi(getenv("FAKE_V4L2_WIDTH")) : 160;
    cam.height = getenv("FAKE_V4L2_HEIGHT") ? (uint32_t)atoi(getenv("FAKE_V4L2_HEIGHT")) : 120;
    const char *faults = getenv("FAKE_V4L2_FAULTS");
    cam.unplug_at = fault_at(faults, "unplug");
    cam.eio_at = fault_at(faults, "eio");
    cam.stall_at = fault_at(faults, "stall");
    cam.short_at = fault_at(faults, "short");
    cam.refuse_format = faults && strstr(faults, "refuse-format") != NULL;
    cam.unplug_ms = getenv("FAKE_V4L2_UNPLUG_MS") ? atol(getenv("FAKE_V4L2_UNPLUG_MS")) : 300;

    const char *path = getenv("FAKE_V4L2_FRAMES");
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)size);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        return;
    }
    fclose(f);
    size_t frame_bytes = (size_t)cam.width * cam.height * 2;
    for (size_t at = 0; at < (size_t)size && cam.frame_count < MAX_FRAMES;) {
        size_t end = cam.pixelformat == V4L2_PIX_FMT_YUYV ? at + frame_bytes
                                                           : next_frame_end(data, (size_t)size, at);
        if (end > (size_t)size) break;
        cam.frames[cam.frame_count] = data + at;
        cam.frame_sizes[cam.frame_count] = end - at;
        if (end - at > cam.max_frame) cam.max_frame = end - at;
        cam.frame_count++;
        at = end;
    }
}

static int is_fake_path(const char *path) {
    setup();
    return cam.device && path && strcmp(path, cam.device) == 0;
}

static int is_fake_fd(int fd) {
    setup();
    return fd >= 0 && fd == cam.fd;
}

static int now_before(struct timespec t) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec < t.tv_sec || (now.tv_sec == t.tv_sec && now.tv_nsec < t.tv_nsec);
}

static int open_fake(void) {
    if (now_before(cam.gone_until)) {
        log_event("open refused: unplugged");
        errno = ENOENT;
        return -1;
    }
    if (cam.fd >= 0) {
        errno = EBUSY;
        return -1;
    }
    int fd = real_open("/dev/null", O_RDWR);
    if (fd < 0) return -1;
    cam.fd = fd;
    cam.unplugged_fd = -1;
    cam.streaming = 0;
    cam.stalled = 0;
    cam.buffer_count = 0;
    log_event("open");
    return fd;
}

int open(const char *path, int flags, ...) {
    va_list args;
    va_start(args, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(args, mode_t) : 0;
    va_end(args);
    if (is_fake_path(path)) return open_fake();
    return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    va_list args;
    va_start(args, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(args, mode_t) : 0;
    va_end(args);
    if (is_fake_path(path)) return open_fake();
    return (real_open64 ? real_open64 : real_open)(path, flags, mode);
}

int close(int fd) {
    if (is_fake_fd(fd)) {
        for (uint32_t i = 0; i < cam.buffer_count; i++) cam.buffers[i].queued = 0;
        cam.fd = -1;
        cam.streaming = 0;
        log_event("close");
    }
    return real_close(fd);
}

static void fill_format(struct v4l2_format *format) {
    memset(&format->fmt.pix, 0, sizeof format->fmt.pix);
    format->fmt.pix.width = cam.width;
    format->fmt.pix.height = cam.height;
    format->fmt.pix.pixelformat = cam.pixelformat;
    format->fmt.pix.field = V4L2_FIELD_NONE;
    format->fmt.pix.bytesperline = cam.pixelformat == V4L2_PIX_FMT_YUYV ? cam.width * 2 : 0;
    format->fmt.pix.sizeimage =
        cam.pixelformat == V4L2_PIX_FMT_YUYV ? cam.width * cam.height * 2 : (uint32_t)cam.max_frame;
    format->fmt.pix.colorspace = V4L2_COLORSPACE_SRGB;
}

static int fail(int error) {
    errno = error;
    return -1;
}

static size_t buffer_length(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t need = cam.max_frame > 0 ? cam.max_frame : 1;
    return (need + page - 1) / page * page;
}

static int dequeue(struct v4l2_buffer *buf) {
    long n = ++cam.dequeues;
    if (n == cam.unplug_at) {
        clock_gettime(CLOCK_MONOTONIC, &cam.gone_until);
        cam.gone_until.tv_sec += cam.unplug_ms / 1000;
        cam.gone_until.tv_nsec += (cam.unplug_ms % 1000) * 1000000L;
        if (cam.gone_until.tv_nsec >= 1000000000L) {
            cam.gone_until.tv_sec++;
            cam.gone_until.tv_nsec -= 1000000000L;
        }
        cam.unplugged_fd = cam.fd;
        log_event("fault unplug at dequeue %ld", n);
        return fail(ENODEV);
    }
    if (n == cam.eio_at) {
        log_event("fault eio at dequeue %ld", n);
        return fail(EIO);
    }
    uint32_t index = MAX_BUFFERS;
    for (uint32_t i = 0; i < cam.buffer_count; i++) {
        if (cam.buffers[i].queued) {
            index = i;
            break;
        }
    }
    if (index == MAX_BUFFERS || cam.frame_count == 0) return fail(EAGAIN);
    struct buffer *b = &cam.buffers[index];
    int frame = (int)(cam.next_frame++ % cam.frame_count);
    size_t used = cam.frame_sizes[frame];
    if (b->memory) memcpy(b->memory, cam.frames[frame], used < b->length ? used : b->length);
    if (n == cam.short_at) {
        used = used * 6 / 10;
        log_event("fault short at dequeue %ld", n);
    }
    b->queued = 0;
    buf->index = index;
    buf->bytesused = (uint32_t)used;
    buf->flags = V4L2_BUF_FLAG_MAPPED | V4L2_BUF_FLAG_DONE;
    buf->field = V4L2_FIELD_NONE;
    buf->sequence = cam.sequence++;
    buf->length = (uint32_t)b->length;
    log_event("dequeue %ld frame %d bytes %zu", n, frame, used);
    return 0;
}

static int fake_ioctl(unsigned long request, void *arg) {
    if (cam.unplugged_fd == cam.fd) return fail(ENODEV);
    switch (request) {
    case VIDIOC_QUERYCAP: {
        struct v4l2_capability *caps = arg;
        memset(caps, 0, sizeof *caps);
        strcpy((char *)caps->driver, "fakecam");
        strcpy((char *)caps->card, "dermedge fake dermatoscope");
        strcpy((char *)caps->bus_info, "fake:0");
        caps->version = 0x060100;
        caps->device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
        caps->capabilities = caps->device_caps | V4L2_CAP_DEVICE_CAPS;
        return 0;
    }
    case VIDIOC_ENUM_FMT: {
        struct v4l2_fmtdesc *desc = arg;
        uint32_t listed[2] = {cam.pixelformat, 0};
        if (cam.refuse_format)
            listed[0] = V4L2_PIX_FMT_MJPEG, listed[1] = V4L2_PIX_FMT_YUYV;
        if (desc->index > 1 || !listed[desc->index] || desc->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
            return fail(EINVAL);
        desc->pixelformat = listed[desc->index];
        desc->flags = desc->pixelformat == V4L2_PIX_FMT_MJPEG ? V4L2_FMT_FLAG_COMPRESSED : 0;
        strcpy((char *)desc->description, desc->pixelformat == V4L2_PIX_FMT_MJPEG  ? "Motion-JPEG"
                                          : desc->pixelformat == V4L2_PIX_FMT_YUYV ? "YUYV 4:2:2"
                                                                                   : "Greyscale");
        return 0;
    }
    case VIDIOC_ENUM_FRAMESIZES: {
        struct v4l2_frmsizeenum *size = arg;
        if (size->index != 0 || size->pixel_format != cam.pixelformat) return fail(EINVAL);
        size->type = V4L2_FRMSIZE_TYPE_DISCRETE;
        size->discrete.width = cam.width;
        size->discrete.height = cam.height;
        return 0;
    }
    case VIDIOC_ENUM_FRAMEINTERVALS: {
        struct v4l2_frmivalenum *interval = arg;
        if (interval->index != 0 || interval->pixel_format != cam.pixelformat ||
            interval->width != cam.width || interval->height != cam.height)
            return fail(EINVAL);
        interval->type = V4L2_FRMIVAL_TYPE_DISCRETE;
        interval->discrete.numerator = 1;
        interval->discrete.denominator = 30;
        return 0;
    }
    case VIDIOC_G_FMT:
        fill_format(arg);
        return 0;
    case VIDIOC_S_FMT: {
        struct v4l2_format *format = arg;
        if (cam.streaming) return fail(EBUSY);
        if (format->fmt.pix.pixelformat != cam.pixelformat || format->fmt.pix.width != cam.width ||
            format->fmt.pix.height != cam.height)
            log_event("s_fmt adjusted%s", cam.refuse_format ? " (refusing)" : "");
        fill_format(format);
        return 0;
    }
    case VIDIOC_G_PARM:
    case VIDIOC_S_PARM: {
        struct v4l2_streamparm *parm = arg;
        memset(&parm->parm, 0, sizeof parm->parm);
        parm->parm.capture.capability = V4L2_CAP_TIMEPERFRAME;
        parm->parm.capture.timeperframe.numerator = 1;
        parm->parm.capture.timeperframe.denominator = 30;
        return 0;
    }
    case VIDIOC_REQBUFS: {
        struct v4l2_requestbuffers *req = arg;
        if (req->memory != V4L2_MEMORY_MMAP) return fail(EINVAL);
        cam.buffer_count = req->count > MAX_BUFFERS ? MAX_BUFFERS : req->count;
        for (uint32_t i = 0; i < MAX_BUFFERS; i++) {
            cam.buffers[i].length = buffer_length();
            cam.buffers[i].queued = 0;
            cam.buffers[i].memory = NULL;
        }
        req->count = cam.buffer_count;
        return 0;
    }
    case VIDIOC_QUERYBUF: {
        struct v4l2_buffer *buf = arg;
        if (buf->index >= cam.buffer_count) return fail(EINVAL);
        buf->length = (uint32_t)cam.buffers[buf->index].length;
        buf->m.offset = (uint32_t)(buf->index * cam.buffers[buf->index].length);
        buf->flags = V4L2_BUF_FLAG_MAPPED;
        return 0;
    }
    case VIDIOC_QBUF: {
        struct v4l2_buffer *buf = arg;
        if (buf->index >= cam.buffer_count) return fail(EINVAL);
        cam.buffers[buf->index].queued = 1;
        return 0;
    }
    case VIDIOC_DQBUF:
        return dequeue(arg);
    case VIDIOC_STREAMON:
        cam.streaming = 1;
        log_event("streamon");
        return 0;
    case VIDIOC_STREAMOFF:
        cam.streaming = 0;
        for (uint32_t i = 0; i < cam.buffer_count; i++) cam.buffers[i].queued = 0;
        log_event("streamoff");
        return 0;
    default:
        return fail(ENOTTY);
    }
}

int ioctl(int fd, unsigned long request, ...) {
    va_list args;
    va_start(args, request);
    void *arg = va_arg(args, void *);
    va_end(args);
    if (is_fake_fd(fd)) return fake_ioctl(request, arg);
    return real_ioctl(fd, request, arg);
}

long syscall(long number, ...) {
    va_list args;
    va_start(args, number);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(args, long);
    va_end(args);
    if (number == SYS_ioctl && is_fake_fd((int)a[0])) return fake_ioctl((unsigned long)a[1], (void *)a[2]);
    setup();
    return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

static void *map_buffer(size_t length, off_t offset) {
    for (uint32_t i = 0; i < cam.buffer_count; i++) {
        if ((off_t)(i * cam.buffers[i].length) == offset) {
            void *memory = real_mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (memory == MAP_FAILED) return MAP_FAILED;
            cam.buffers[i].memory = memory;
            cam.buffers[i].length = length;
            return memory;
        }
    }
    errno = EINVAL;
    return MAP_FAILED;
}

void *mmap(void *start, size_t length, int prot, int flags, int fd, off_t offset) {
    if (is_fake_fd(fd)) return map_buffer(length, offset);
    return real_mmap(start, length, prot, flags, fd, offset);
}

void *mmap64(void *start, size_t length, int prot, int flags, int fd, off_t offset) {
    if (is_fake_fd(fd)) return map_buffer(length, offset);
    return (real_mmap64 ? real_mmap64 : real_mmap)(start, length, prot, flags, fd, offset);
}

int poll(struct pollfd *fds, nfds_t count, int timeout) {
    setup();
    for (nfds_t i = 0; i < count; i++) {
        if (!is_fake_fd(fds[i].fd)) continue;
        if (count != 1) return fail(EINVAL);
        if (cam.unplugged_fd == cam.fd) {
            fds[i].revents = POLLERR;
            return 1;
        }
        if (cam.stall_at > 0 && cam.dequeues + 1 >= cam.stall_at && !cam.stalled) {
            cam.stalled = 1;
            cam.stall_at = 0;
            log_event("fault stall at dequeue %ld", cam.dequeues + 1);
        }
        if (cam.stalled) {
            struct timespec wait = {timeout / 1000, (timeout % 1000) * 1000000L};
            if (timeout >= 0) nanosleep(&wait, NULL);
            fds[i].revents = 0;
            return 0;
        }
        struct timespec frame_interval = {0, 2 * 1000000L};
        nanosleep(&frame_interval, NULL);
        fds[i].revents = fds[i].events & (POLLIN | POLLOUT);
        return 1;
    }
    return real_poll(fds, count, timeout);
}
