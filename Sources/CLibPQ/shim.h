#ifndef OTPD_CLIBPQ_SHIM_H
#define OTPD_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
