"""The constants and polynomial coefficients of the call-free math library (mathlib.py), per
float format: what each polynomial approximates, on which interval, and its fitted error."""

from __future__ import annotations

from dataclasses import dataclass


def numbers(text: str) -> tuple[float, ...]:
    """Return the whitespace-separated numbers in text (coefficient tables stay compact)."""
    return tuple(float(word) for word in text.split())


@dataclass(frozen=True, slots=True)
class Params:
    """Constants and polynomial coefficients (lowest order first) for one format."""

    exp_clamp: tuple[float, float]  # beyond these, exp is 0 / inf after rounding
    exp_normal: tuple[float, float]  # within these, exp is a normal number
    ln2: tuple[float, float]  # ln 2 = hi + lo
    pio2: tuple[float, ...]  # pi/2 = sum, for the Cody-Waite reduction (f32: none)
    tanh_split: float  # below: polynomial; above: 1 - 2 / (exp(2x) + 1)
    erf_split: float  # below: polynomial; above: 1 - exp(-x*x) * Q(1 / (1 + x))
    erf_clamp: float  # erf(x) rounds to 1 beyond
    erf_center: float  # Q is a polynomial in 1 / (1 + x) - erf_center
    # exp(r) = 1 + r + r^2 * P(r), |r| <= 0.347
    exp: tuple[float, ...]
    # log(1 + f) = f - (f^2/2 - s * (f^2/2 + z * P(z))), s = f / (2 + f), z = s^2 <= 0.1716^2
    log: tuple[float, ...]
    # tanh(x) = x + x * z * P(z), z = x^2, |x| < tanh_split
    tanh: tuple[float, ...]
    # sin(r) = r + r * z * P(z), cos(r) = 1 - z/2 + z^2 * Q(z), z = r^2, |r| <= 0.79
    sin: tuple[float, ...]
    cos: tuple[float, ...]
    # erf(x) = x + x * P(x^2), |x| < erf_split
    erf_small: tuple[float, ...]
    # erfc(x) * exp(x^2) = Q(1 / (1 + x) - erf_center), erf_split <= x <= erf_clamp
    erf_large: tuple[float, ...]
    # pow: for f32, the log and exp coefficients of its f64 computation (2^-37, 2^-32); for
    # f64, the tail P of its double-double log(1 + f) = 2s + (2/3)s^3 + s^5 * P(s^2)
    pow_log: tuple[float, ...]
    pow_exp: tuple[float, ...]
    # atan(t) = t + t * z * P(z), z = t^2, |t| <= 7/16; f32 evaluates it in f64
    atan: tuple[float, ...]


PARAMS = {
    "f32": Params(
        exp_clamp=(-104.0, 89.0),
        exp_normal=(-87.0, 88.0),
        ln2=(0.6931471824645996, -1.9046542121259336e-09),
        pio2=(),  # f32 sin and cos reduce in f64
        tanh_split=0.55,
        erf_split=0.75,
        erf_clamp=4.0,
        erf_center=0.0,
        # fitted error 2^-28.2
        exp=numbers("0.49999994 0.16666515 0.041668084 0.008369349 0.0013840399"),
        # 2^-30.2
        log=numbers("0.66666776 0.39977583 0.2987083"),
        # 2^-29.7
        tanh=numbers("-0.33333316 0.13332544 -0.053847548 0.021050714 -0.0062428494"),
        # evaluated in f64: 2^-37.4 and 2^-42.8
        sin=numbers(
            """
            -0.16666666639552194 0.008333329160605807 -0.00019839265913894208
            2.7176802076799546e-06
            """
        ),
        cos=numbers(
            """
            0.04166666661719318 -0.0013888883304961238 2.4799409263343255e-05
            -2.7201588407868494e-07
            """
        ),
        # 2^-29.2, and absolute error in erfc 2^-32.4
        erf_small=numbers(
            """
            0.12837917 -0.3761262 0.11283379 -0.026834335 0.005113157 -0.00067375833
            """
        ),
        erf_large=numbers(
            """
            -0.0009411394 0.5820645 0.4191862 0.9258124 -1.9115013 1.3483132 -0.36458242
            """
        ),
        pow_log=numbers(
            """
            0.6666666564733665 0.40000334858504527 0.28537324815901094 0.23581919888023045
            """
        ),
        pow_exp=numbers(
            """
            0.5000000056902695 0.16666660018179202 0.04166631586124027 0.008334922979118807
            0.001394370247328518 0.0001898699151775633
            """
        ),
        # evaluated in f64: 2^-32.4
        atan=numbers(
            """
            -0.3333333324110695 0.1999996437008203 -0.14283478469620736 0.11059371213647792
            -0.08538938609178695 0.04836508844181185
            """
        ),
    ),
    "f64": Params(
        exp_clamp=(-746.0, 710.0),
        exp_normal=(-708.0, 709.0),
        ln2=(0.6931471805599453, 2.3190468138462996e-17),
        pio2=(1.5707963267948966, 6.123233995736766e-17, -1.4973849048591698e-33),
        tanh_split=0.55,
        erf_split=0.65,
        erf_clamp=6.0,
        erf_center=0.374,
        # 2^-57.6
        exp=numbers(
            """
            0.5000000000000004 0.1666666666666643 0.04166666666657118 0.008333333333492753
            0.0013888888934614598 0.0001984126949796501 2.4801501177801468e-05
            2.755760097524296e-06 2.7627701350492153e-07 2.499405406485449e-08
            """
        ),
        # 2^-59.5
        log=numbers(
            """
            0.6666666666666734 0.39999999999416685 0.28571428742026445 0.22222198603657456
            0.18183563022900057 0.15314077720863567 0.1479573269191812
            """
        ),
        # 2^-60.6
        tanh=numbers(
            """
            -0.333333333333333 0.1333333333332658 -0.05396825396373695 0.021869488385179124
            -0.008863232590409172 0.003592091920038892 -0.0014555421445353893 0.0005884416519268804
            -0.00023337450764725377 8.330658225005097e-05 -1.9488766816488583e-05
            """
        ),
        # 2^-63.2 and 2^-63.8
        sin=numbers(
            """
            -0.16666666666666666 0.008333333333333044 -0.0001984126984096634 2.755731907687376e-06
            -2.5052071879722822e-08 1.605445651624184e-10 -7.397667404872345e-13
            """
        ),
        cos=numbers(
            """
            0.04166666666666659 -0.0013888888888872167 2.4801587288274786e-05
            -2.755731400737405e-07 2.0875676842339815e-09 -1.1357264527444797e-11
            """
        ),
        # 2^-56.0, and absolute error in erfc 2^-58.4
        erf_small=numbers(
            """
            0.12837916709551256 -0.3761263890318311 0.11283791670910669 -0.026866170633186963
            0.005223977462392463 -0.0008548314239423433 0.00012054722913167754
            -1.490762600253845e-05 1.6139345420053398e-06 -1.312324302185347e-07
            """
        ),
        erf_large=numbers(
            """
            0.2952870095149216 1.0000162210333554 0.45206264616492425 -0.42923477003036387
            -0.1556037793502959 0.5283829954859975 -0.30365092183390957 -0.3832769599599792
            0.9573479165324665 -0.7365472983134864 -0.5576769742400709 2.3299898366556695
            -3.0043904575951044 0.6747564384293919 4.8740056314202445 -9.258102422216243
            6.257156639298491
            """
        ),
        # 2^-66.3
        pow_log=numbers(
            """
            0.40000000000002256 0.2857142857009934 0.22222222520009025 0.18181784355993544
            0.15386757998764025 0.13256798821903953 0.1319653382359145
            """
        ),
        pow_exp=(),  # f64 pow uses the exp coefficients
        # 2^-60.3
        atan=numbers(
            """
            -0.3333333333333333 0.1999999999999945 -0.14285714285574708 0.11111111097287352
            -0.09090908382390012 0.076922862067609 -0.06666251814569858 0.058770428559591456
            -0.0521728333043419 0.044946062465129756 -0.03317970932729475 0.014822130878006334
            """
        ),
    ),
}

# ln 2 with 42 significant bits, so k * LN2_HI42 is exact for every exponent k of a double.
LN2_HI42 = 0.6931471805598903
LN2_LO42 = 5.497923018708371e-14
TWO_THIRDS = (0.6666666666666666, 3.700743415417188e-17)

# constants as hi + lo
PI = (3.141592653589793, 1.2246467991473532e-16)
PI_2 = (1.5707963267948966, 6.123233995736766e-17)
PI_4 = (0.7853981633974483, 3.061616997868383e-17)
ATAN_HALF = (0.4636476090008061, 2.2698777452961687e-17)
